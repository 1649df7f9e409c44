"""Checkers for 16_when_peft_goes_wrong: each lab's diagnosis, judged by measuring the symptom again.

A cause named from a list is checked by the measurement that tells the causes apart (the checker
applies each candidate's remedy and sees which one makes the symptom go away); a fix the learner
writes is run, and must make the symptom go away.
"""
import warnings

import torch

from peftlab import LoraConfig, PeftModel, get_peft_model
from peftlab.course import failures, symptoms
from peftlab.workbook.batching import PromptTargetCollator
from peftlab.workbook.data import load_task
from peftlab.workbook.zoo import load_base_model

from .checking import Verdict, attempted, call_stub, judge_prediction, report

CONFIG = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])   # the notebook's adapter


def _unanswered(title: str, answer, choices: tuple[str, ...]) -> Verdict | None:
    """The verdict for an answer that cannot be judged yet: the stub untouched, or none of `choices` (what to
    write then); None when `answer` is one of them."""
    if not attempted(answer):
        return report(title, None)
    if answer in choices:
        return None
    listed = "\n".join(f"  {c!r}" for c in choices)
    return report(title, False, f"copy one of these exactly:\n{listed}")


# --- lab 1: merged is not unmerged in bfloat16 --------------------------------------------------------------
MERGE_CAUSES = ("the adapter was saved or loaded wrong", "merging has an arithmetic bug",
                "bfloat16 rounds W + ΔW to its 8 significant bits", "dropout is still on")


def check_merge_cause(cause, folder) -> Verdict:
    """🌱 Why do the merged and the unmerged adapter disagree in bfloat16? One of MERGE_CAUSES, judged by
    merging the same saved adapter in float32 and in bfloat16."""
    title = "merged against unmerged"
    if (early := _unanswered(title, cause, MERGE_CAUSES)) is not None:
        return early
    batch = failures.sentiment_batch()
    gap32, gap16 = symptoms.merge_gap(folder, torch.float32, batch), symptoms.merge_gap(folder, torch.bfloat16, batch)
    if gap32 < 1e-4 and gap16 > 100 * gap32:
        found = MERGE_CAUSES[2]
    else:
        found = MERGE_CAUSES[1]
    lesson = ("The same file, loaded the same way and in eval mode, merges exactly in float32: neither the "
              "file, nor the merge's arithmetic, nor dropout can be the cause. Only the precision differs.")
    return judge_prediction(title, cause, found, f"largest |logit difference| merged against unmerged: "
                            f"float32 {gap32:.1e}, bfloat16 {gap16:.2f}", lesson)


# --- lab 2: LoRA is barely faster, and can hold more memory -------------------------------------------------
MEMORY_TERMS = ("weights", "gradients", "Adam moments", "activations saved for backward")


def check_memory_term(term, batch) -> Verdict:
    """🌿 Which term of the training bill grows by the most bytes from full fine-tuning to LoRA on every
    linear layer with dropout 0.1? One of MEMORY_TERMS, measured on `batch`."""
    title = "the term that grows"
    if (early := _unanswered(title, term, MEMORY_TERMS)) is not None:
        return early
    full = load_base_model()[0].requires_grad_(True)
    bills = {"full fine-tuning": symptoms.memory_bill(full, batch),
             "LoRA": symptoms.memory_bill(failures.lora_everywhere_with_dropout(), batch)}
    growth = {t: bills["LoRA"][t] - bills["full fine-tuning"][t] for t in MEMORY_TERMS}
    found = max(growth, key=growth.get)
    measured = "change from full fine-tuning to LoRA: " + ", ".join(f"{t} {growth[t] / 2**20:+.1f} MiB"
                                                                     for t in MEMORY_TERMS)
    lesson = ("LoRA removes the gradients and Adam moments of the frozen weights, a few bytes per parameter; "
              "activations grow with batch x sequence x width, and every adapted layer with dropout keeps its "
              "own dropped copy of its input for the backward pass. At 1M parameters and 32 short reviews the "
              "activations are the bill.")
    return judge_prediction(title, term, found, measured, lesson)


# --- lab 3: a mistyped target ------------------------------------------------------------------------------
TARGET_CAUSES = ("v_proj is not a Linear layer, so LoRA skipped it",
                 "'v_projj' names no module, and a list is refused only when no entry matches",
                 "grouped-query attention makes v_proj's adapter smaller",
                 "r=4 is too small to reach v_proj")


def check_target_cause(cause) -> Verdict:
    """🌱 target_modules=["q_proj", "v_projj"] trained 4,096 numbers instead of 7,168: why? One of
    TARGET_CAUSES, judged by counting what each entry names in the model."""
    title = "the missing adapter"
    if (early := _unanswered(title, cause, TARGET_CAUSES)) is not None:
        return early
    base = load_base_model()[0]
    matches = symptoms.entry_matches(base, ["q_proj", "v_projj", "v_proj"])
    v_is_linear = isinstance(base.model.layers[0].self_attn.v_proj, torch.nn.Linear)
    found = TARGET_CAUSES[1] if matches["v_projj"] == 0 and matches["q_proj"] > 0 and v_is_linear else TARGET_CAUSES[0]
    lesson = ("v_proj is an ordinary Linear layer (LoRA wraps it when it is named right). A list entry "
              "matches a module whose name ends with it; 'v_projj' ends no name, and since q_proj matched, the "
              "config was accepted with half its targets.")
    return judge_prediction(title, cause, found, f"modules named by each entry: {matches}", lesson)


# --- lab 4: an adapter that does nothing ---------------------------------------------------------------------
def check_optimizer_fix(make_optimizer) -> Verdict:
    """🌿 Write make_optimizer(model): the optimizer for a model that get_peft_model has already adapted.
    Judged by training a fresh adapter 10 steps with it: every LoRA layer must move and the loss must fall."""
    title = "an optimizer that trains the adapter"
    base = load_base_model()[0]
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(**CONFIG))
    optimizer = call_stub(make_optimizer, model)
    if not attempted(optimizer):
        return report(title, None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        return report(title, False, f"make_optimizer returned {type(optimizer).__name__}; return a torch optimizer, "
                      "such as torch.optim.AdamW(...).")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not any(id(p) in held for p in trainable):
        return report(title, False, "your optimizer holds none of the adapter's parameters: build it from the model "
                      "get_peft_model returned, after the adapter exists.")
    task = load_task("sentiment")
    losses = symptoms.hand_loop(model, optimizer, task["train"], PromptTargetCollator(load_base_model()[1]), steps=10)
    still = symptoms.untouched_lora_layers(model)
    if still:
        return report(title, False, f"{len(still)} LoRA layers never moved (for instance {still[0]}): does your "
                      "optimizer hold every adapter parameter, with a learning rate above zero?")
    if not losses[-1] < losses[0]:
        return report(title, False, f"the adapter moved but the loss went from {losses[0]:.2f} to {losses[-1]:.2f}: "
                      "try the notebook's learning rate, 1e-2.")
    extra = len(held) - sum(id(p) in held for p in trainable)
    note = (f" It also holds {extra} frozen tensors, which AdamW skips (they never get a gradient): "
            "[p for p in model.parameters() if p.requires_grad] says what you mean." if extra else "")
    return report(title, True, f"all {len(symptoms.lora_layers(model))} LoRA layers moved and the loss fell from "
                  f"{losses[0]:.2f} to {losses[-1]:.2f} in 10 steps.{note}")


# --- lab 5: a soft prompt that generate ignores --------------------------------------------------------------
GENERATE_CAUSES = ("the prompt is untrained, so it cannot change anything",
                   "generate ran on the transformer inside, which holds no prompt",
                   "greedy decoding ignores soft prompts",
                   "the key/value cache dropped the virtual tokens after the first step")


def _continuations(generate, encoded: dict, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        out = generate(**encoded, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[:, -new_tokens:]


def check_generate_cause(cause, model, tokenizer, prompts) -> Verdict:
    """🌱 Why did generate write exactly what the base model writes? One of GENERATE_CAUSES, judged by
    generating from the prompt-tuned `model`, from the transformer inside it and from the base, and by
    decoding greedily without a cache."""
    title = "the ignored prompt"
    if (early := _unanswered(title, cause, GENERATE_CAUSES)) is not None:
        return early
    new = 3
    rows = [tokenizer([p], return_tensors="pt") for p in prompts]    # one prompt at a time: no padding at all
    with_prompt = [_continuations(model.generate, r, new) for r in rows]
    inside = [_continuations(model.get_base_model().generate, r, new) for r in rows]
    with model.disable_adapter():
        plain = [_continuations(model.generate, r, new) for r in rows]
    by_hand = [symptoms.greedy_without_cache(model, r["input_ids"], new)[:, -new:] for r in rows]
    moved = sum(symptoms.next_token_shift(model, r) for r in rows) / len(rows)
    inside_is_base = all(torch.equal(a, b) for a, b in zip(inside, plain))
    cache_kept = all(torch.equal(a, b) for a, b in zip(with_prompt, by_hand))
    found = GENERATE_CAUSES[1] if moved > 1e-3 and inside_is_base and cache_kept else GENERATE_CAUSES[0]
    measured = (f"over {len(prompts)} prompts: the soft prompt moves the next token's logits by {moved:.3f} on average; "
                f"the transformer inside writes the base model's continuation every time: {inside_is_base}; the "
                f"PeftModel's generate equals greedy decoding without a cache: {cache_kept}")
    lesson = ("Even this untrained prompt moves the logits, and the PeftModel's generate matches a cache-free "
              "decoding step for step: the prompt is used at every step. The transformer inside is your "
              "model, untouched: the virtual tokens live in the tuner, so its generate cannot know about them.")
    return judge_prediction(title, cause, found, measured, lesson)


# --- lab 6: raising the rank with alpha = 2r ------------------------------------------------------------------
STEP_BUCKETS = ("about the same (less than 2x)", "2x to 20x larger", "more than 20x larger")


def _judge_ratio(title: str, prediction: str, buckets: tuple[str, ...], edges: tuple[float, float],
                 top: tuple[str, float], bottom: tuple[str, float], what: str, lesson: str) -> Verdict:
    """Judge a predicted bucket of top / bottom: buckets[0] below edges[0], buckets[1] up to edges[1],
    buckets[2] above."""
    ratio = top[1] / bottom[1]
    found = buckets[0] if ratio < edges[0] else buckets[1] if ratio <= edges[1] else buckets[2]
    measured = f"{what}: {top[0]} {top[1]:.5f}, {bottom[0]} {bottom[1]:.5f} ({ratio:.1f}x)"
    return judge_prediction(title, prediction, found, measured, lesson)


def check_alpha_step(prediction, batch) -> Verdict:
    """🌿 Predict, then measure: one AdamW step at lr 1e-3 from r=4, alpha=8 and from r=64, alpha=128 (alpha = 2r):
    how much larger is the second's change of the logits? One of STEP_BUCKETS."""
    title = "alpha = 2r"
    if (early := _unanswered(title, prediction, STEP_BUCKETS)) is not None:
        return early
    small = symptoms.one_step_change(failures.lora_model(4, 8), batch, 1e-3)
    large = symptoms.one_step_change(failures.lora_model(64, 128), batch, 1e-3)
    lesson = ("Adam's first step moves every entry of B by about the learning rate, so B A x adds up r terms: the "
              "change grows like r, and the scale alpha/r takes r away again. What is left is alpha: with alpha = 2r, "
              "raising r from 4 to 64 multiplies the step by about what multiplying the learning rate would.")
    return _judge_ratio(title, prediction, STEP_BUCKETS, (2, 20), ("r=64, alpha=128", large), ("r=4, alpha=8", small),
                        "first-step change of the logits at lr 1e-3", lesson)


# --- lab 7: LoRA at full fine-tuning's learning rate -------------------------------------------------------------
RATE_BUCKETS = ("about the same (less than 2x)", "2x to 10x more", "more than 10x more")
RATE = 1e-4     # a full fine-tuning rate of the stored runs (results/budgets.json, 5 steps)


def check_rate_gap(prediction, batch) -> Verdict:
    """🌳 Predict, then measure: one AdamW step at lr 1e-4 from the same base, full fine-tuning and LoRA r=4 on
    q_proj and v_proj: how much more does full fine-tuning change the logits? One of RATE_BUCKETS."""
    title = "one step at one rate"
    if (early := _unanswered(title, prediction, RATE_BUCKETS)) is not None:
        return early
    full = symptoms.one_step_change(load_base_model()[0].requires_grad_(True), batch, RATE)
    lora = symptoms.one_step_change(failures.lora_model(4, 8), batch, RATE)
    lesson = ("Full fine-tuning moves each of about a million weights by about the rate at once. LoRA starts from "
              "B = 0, so its whole change is (alpha/r) B A x with each entry of B only about one rate away from zero: "
              "a far smaller move of the function. Each method needs its own rate, chosen on validation.")
    return _judge_ratio(title, prediction, RATE_BUCKETS, (2, 10), ("full fine-tuning", full), ("LoRA", lora),
                        f"first-step change of the logits at lr {RATE:g}", lesson)


# --- lab 8: gradient checkpointing that trains only lm_head ------------------------------------------------------
CHECKPOINT_CAUSES = ("checkpointing recomputes the forward pass without the adapters",
                     "a reentrant checkpoint backpropagates into its block only if one of its inputs requires grad",
                     "lm_head's adapter takes the whole gradient",
                     "the learning rate is too small for q_proj and v_proj")


def check_checkpointing_cause(cause, batch) -> Verdict:
    """🌿 Why did q_proj's and v_proj's B stay zero while lm_head's trained? One of CHECKPOINT_CAUSES, judged by
    one backward pass with the embedding's output requiring grad, and one with a non-reentrant checkpoint."""
    title = "gradient checkpointing"
    if (early := _unanswered(title, cause, CHECKPOINT_CAUSES)) is not None:
        return early
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # torch warns that no input requires grad: that is the point
        missing = {setting: len(symptoms.gradient_free_parameters(failures.checkpointed_lora(**options), batch))
                   for setting, options in (("as trained", {}), ("embedding output requires grad", {"input_hook": True}),
                                            ("non-reentrant checkpoint", {"reentrant": False}))}
    remedied = (missing["embedding output requires grad"], missing["non-reentrant checkpoint"])
    fixed = missing["as trained"] > 0 and remedied == (0, 0)
    found = CHECKPOINT_CAUSES[1] if fixed else CHECKPOINT_CAUSES[0]
    lesson = ("Same adapters, same forward pass: gradients reach q_proj and v_proj as soon as the block's input "
              "requires grad, or the checkpoint is not reentrant. A reentrant checkpoint runs its block without "
              "autograd and replays it in the backward pass only for inputs that need a gradient; the frozen "
              "embedding's output needs none, and the adapters' own parameters are not inputs.")
    return judge_prediction(title, cause, found, "trainable tensors without a gradient after one backward pass: "
                            + ", ".join(f"{k} {v}" for k, v in missing.items()), lesson)


# --- lab 9: an adapter that answers differently every time -------------------------------------------------------
DROPOUT_CAUSES = ("the saved adapter is corrupt",
                  "the loaded adapter's modules run in training mode, so its dropout is on",
                  "set_adapter mixes the two adapters",
                  "scoring without torch.no_grad() adds noise")


def check_dropout_cause(cause, folder, batch) -> Verdict:
    """🌱 Why did the same batch get a different loss on every call? One of DROPOUT_CAUSES, judged by scoring the
    pre-fix state three times, then again after model.eval() (both under torch.no_grad)."""
    title = "a loss that changes"
    if (early := _unanswered(title, cause, DROPOUT_CAUSES)) is not None:
        return early
    torch.manual_seed(0)
    before = symptoms.repeated_losses(failures.as_before_the_fix(failures.resumed_model(folder)), batch)
    after = symptoms.repeated_losses(failures.as_before_the_fix(failures.resumed_model(folder)).eval(), batch)
    found = DROPOUT_CAUSES[1] if len(set(before)) > 1 and len(set(after)) == 1 else DROPOUT_CAUSES[0]
    lesson = ("The same file, the same adapter, all under torch.no_grad(): only the modules' mode changed between "
              "the two runs. nn.Module starts in training mode, so modules added to a model in eval mode run "
              "their dropout until something calls eval() on them.")
    return judge_prediction(title, cause, found, f"loss on the same batch, three calls: as loaded {before}, after "
                            f"model.eval() {after}", lesson)


# --- lab 10: a merged model loaded again with its adapter ----------------------------------------------------------
TWICE_FACTORS = ("0x: the two copies cancel", "1x: the merged copy is recognised", "2x",
                 "4x: the update multiplies itself")


def check_twice_factor(prediction, folder) -> Verdict:
    """🌱 Predict, then measure: the adapter in `folder` loaded onto a model it is already merged into. How
    large is the change of layer 0's q_proj output, against the base, in units of the adapter's own change?"""
    title = "applied twice"
    if (early := _unanswered(title, prediction, TWICE_FACTORS)) is not None:
        return early
    base = load_base_model()[0]
    x = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))               # (tokens, hidden)
    once = PeftModel.from_pretrained(load_base_model()[0], folder)
    twice = PeftModel.from_pretrained(PeftModel.from_pretrained(load_base_model()[0], folder).merge_and_unload(),
                                      folder)
    with torch.no_grad():
        plain = base.model.layers[0].self_attn.q_proj(x)
        delta_once = once.get_base_model().model.layers[0].self_attn.q_proj(x) - plain
        delta_twice = twice.get_base_model().model.layers[0].self_attn.q_proj(x) - plain
    factor = (delta_twice.norm() / delta_once.norm()).item()
    found = min(TWICE_FACTORS, key=lambda f: abs(float(f.split("x")[0]) - factor))
    lesson = ("The merged weight is W + ΔW, an ordinary weight with no trace of the adapter in it; loading the "
              "adapter onto it adds ΔW x once more: W x + 2 ΔW x, twice the change the adapter was trained to make.")
    return judge_prediction(title, prediction, found, f"|change twice| / |change once| = {factor:.4f}", lesson)
