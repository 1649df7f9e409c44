"""Checker for 00_welcome."""
from .checking import Verdict, attempted, report


def check_parameter_count(answer, model) -> Verdict:
    """🌱 How many parameters does the base model have (tied embeddings counted once)?"""
    if not attempted(answer):
        return report("parameter count", None)
    truth = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    if answer == truth:
        return report("parameter count", True, f"{truth:,} parameters.")
    if answer > truth and answer - truth == model.get_input_embeddings().weight.numel():
        return report("parameter count", False, "you counted the tied embedding matrix twice: "
                      "input and output embeddings are the same tensor.")
    return report("parameter count", False, f"{answer:,} is not it. Hint: sum p.numel() over "
                  "model.parameters() (it already yields a shared tensor once).")
