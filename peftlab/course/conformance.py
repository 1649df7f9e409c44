"""The conformance table's invariants, for a method written in a notebook (notebook 17's capstone).

The library's methods are held to a table of invariants on many architectures (tests/test_conformance.py).
A method a learner writes in a notebook is held to the same ones here, on the bundled pico-llama-1m, and
told which one breaks and what that means:

    plugs in            get_peft_model builds your tuner, wraps the targets with your layer, trains only the adapter
    identity at init    the adapted model starts as the base model (for methods that start there)
    changes the outputs a trained adapter moves the logits (else every other invariant holds trivially)
    merge = unmerged    folding the adapter into W gives the same logits; merge_and_unload gives the plain model
    unmerge restores    unmerging gives back the base weights
    disable = base      with the adapter switched off the model is the base model, and switching it on restores it
    save / load         a saved folder (peft's keys) loads through the registry to the same logits
    peft loads yours    Hugging Face peft reads your folder and gives the same logits (1e-5)
    yours loads peft's  a folder peft wrote loads in your class to the same logits (1e-5)

A method file registers for good (`@register_method`); a class in a notebook is tried with
`registered(tuner_class)`, which plugs it into the same registry for a `with` block and then gives the
library's own tuner for that peft_type back. peft is optional: without it the last two are skipped, said so.
"""
import copy
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from peftlab.config import CONFIG_REGISTRY
from peftlab.model import PeftModel, get_peft_model
from peftlab.tuners.layer_tuner import LayerTuner
from peftlab.tuners.registry import TUNERS, register_method
from peftlab.workbook.zoo import load_base_model

SAME = 1e-5          # logits that must agree (peft's round trip, identity, disabling)
MERGED = 1e-4        # a merged weight is rounded once more, and pico-llama's logits are ~10 in size
MOVED = 1e-3         # a trained adapter must move some logit by at least this much
NOT_APPLICABLE = "does not apply"


class Broken(AssertionError):
    """An invariant that does not hold; the message says what was measured."""


@contextmanager
def registered(tuner_class: type):
    """Within the block, `tuner_class` runs its config's peft_type, as `@register_method` makes a method
    file's tuner run it: get_peft_model and PeftModel.from_pretrained find it there. After the block the
    registry is as it was (the library's own tuner for that type, if it has one)."""
    if not (isinstance(tuner_class, type) and issubclass(tuner_class, LayerTuner)):
        raise TypeError(f"registered() takes a tuner class (a subclass of LayerTuner, like MyOFTModel), "
                        f"got {tuner_class!r}.")
    peft_type = getattr(getattr(tuner_class, "config_class", None), "peft_type", "")
    if not peft_type:
        raise TypeError(f"{tuner_class.__name__}.config_class must be a config class with a peft_type "
                        "(e.g. config_class = OFTConfig), so that folders say which method they hold.")
    before = TUNERS.get(peft_type), CONFIG_REGISTRY.get(peft_type)
    register_method(tuner_class)
    try:
        yield tuner_class
    finally:
        for table, old in zip((TUNERS, CONFIG_REGISTRY), before):
            if old is None:
                table.pop(peft_type, None)
            else:
                table[peft_type] = old


@dataclass
class Trial:
    """A method on trial: its tuner class, a function making its config, and the base model it runs on."""
    tuner: type
    config: Callable[[], object]
    identity_at_init: bool = True
    expected_trainable: int | None = None
    base_name: str = "pico-llama-1m"

    def __post_init__(self):
        self._base = load_base_model(self.base_name)[0].double().eval()   # float64: rounding cannot fail a method
        g = torch.Generator().manual_seed(1)
        self.inputs = {"input_ids": torch.randint(4, self._base.config.vocab_size, (3, 12), generator=g)}

    def base(self):
        return copy.deepcopy(self._base)

    def logits(self, model) -> torch.Tensor:
        with torch.no_grad():
            return model(**self.inputs).logits

    def adapted(self, perturbed: bool = True):
        """A PeftModel of the method on a fresh base, its trained tensors moved away from their start."""
        with torch.random.fork_rng(), registered(self.tuner):   # the caller's random state is left alone
            torch.manual_seed(0)   # the same random init each time: two calls give the same adapter
            model = get_peft_model(self.base(), self.config())
        if perturbed:
            perturb(model)
        return model.eval()

    def load(self, folder):
        """The folder loaded through the registry, in a random state unlike the one that built it (as in
        another session): what the folder does not hold cannot come back by chance."""
        with torch.random.fork_rng(), registered(self.tuner):
            torch.manual_seed(1)
            return PeftModel.from_pretrained(self.base(), folder)


@torch.no_grad()
def perturb(model, scale: float = 0.1, seed: int = 2) -> None:
    """Add seeded noise to every trainable tensor, as training would move them."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


def peft_installed() -> bool:
    return importlib.util.find_spec("peft") is not None


def import_peft():
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)   # peft imports it; it logs about optional CPU kernels
    import peft
    return peft


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def within(name: str, measured: float, bound: float) -> str:
    if not measured <= bound:
        raise Broken(f"{name} = {measured:.1e}, more than {bound:.0e}")
    return f"{name} = {measured:.1e} (at most {bound:.0e})"


# --- the invariants --------------------------------------------------------------------------

def plugs_in(trial: Trial) -> str:
    model = trial.adapted(perturbed=False)
    if type(model.base_model) is not trial.tuner:
        raise Broken(f"get_peft_model built {type(model.base_model).__name__}, not {trial.tuner.__name__}")
    layers = [m for m in model.modules() if type(m) in trial.tuner.layers.values()]
    if not layers:
        raise Broken("no layer of the model was wrapped by your layer class")
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise Broken("nothing trains: update_layer must store nn.Parameters in the dicts adapter_layer_names lists")
    strays = [n for n in trainable if ".default" not in n]
    if strays:
        raise Broken(f"tensors outside the adapter train too: {strays[:3]}")
    total = sum(trainable.values())
    if trial.expected_trainable is not None and total != trial.expected_trainable:
        raise Broken(f"{total:,} trainable numbers, the method's formula gives {trial.expected_trainable:,}")
    return f"{len(layers)} layers wrapped by {type(layers[0]).__name__}, {total:,} trainable numbers"


def starts_as_base(trial: Trial) -> str:
    return within("max |logit - base logit| before training",
                  gap(trial.logits(trial.adapted(perturbed=False)), trial.logits(trial.base())), SAME)


def changes_the_outputs(trial: Trial) -> str:
    moved = gap(trial.logits(trial.adapted()), trial.logits(trial.base()))
    if moved < MOVED:
        raise Broken(f"max |logit - base logit| = {moved:.1e} with the adapter's tensors moved: the adapter "
                     "does not reach the forward pass")
    return f"max |logit - base logit| = {moved:.2f}"


def merge_equals_unmerged(trial: Trial) -> str:
    model = trial.adapted()
    unmerged = trial.logits(model)
    model.merge_adapter()
    merged = gap(trial.logits(model), unmerged)
    plain = trial.adapted().merge_and_unload()     # a fresh copy: unmerging has an invariant of its own
    if type(plain) is not type(trial._base):
        raise Broken(f"merge_and_unload gave a {type(plain).__name__}, not the plain {type(trial._base).__name__}")
    within("merged", merged, MERGED)
    return within("max |logit difference|, merged and merge_and_unload",
                  max(merged, gap(trial.logits(plain), unmerged)), MERGED)


def unmerge_restores(trial: Trial) -> str:
    model = trial.adapted()
    before = {k: v.clone() for k, v in model.state_dict().items() if "base_layer" in k}
    model.merge_adapter()
    if all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()):
        raise Broken("merge_adapter left every base weight as it was: merge_weights must return W with the "
                     "adapter folded in")
    model.unmerge_adapter()
    return within("max |weight change| after merge then unmerge",
                  max(gap(model.state_dict()[k], v) for k, v in before.items()), SAME)


def disable_equals_base(trial: Trial) -> str:
    model = trial.adapted()
    adapted = trial.logits(model)
    with model.disable_adapter():
        off = gap(trial.logits(model), trial.logits(trial.base()))
    back = gap(trial.logits(model), adapted)
    within("switched on again, max |logit change|", back, 0.0)
    return within("max |logit - base logit| switched off", off, SAME)


def save_load(trial: Trial) -> str:
    model = trial.adapted()
    expected = trial.logits(model)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        keys = list(model.base_model.adapter_state_dict("default"))
        if any(".default" in k for k in keys):
            raise Broken(f"saved keys hold the adapter's name ({keys[0]}): peft's keys do not")
        loaded = trial.load(folder)
        if type(loaded.base_model) is not trial.tuner:
            raise Broken(f"the folder loaded as {type(loaded.base_model).__name__}, not {trial.tuner.__name__}")
        return within("max |logit difference| after loading", gap(trial.logits(loaded), expected), SAME)


def peft_loads_yours(trial: Trial) -> str:
    peft = import_peft()
    model = trial.adapted()
    expected = trial.logits(model)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # peft's notes on versions and deprecations
        model.save_pretrained(folder)
        theirs = peft.PeftModel.from_pretrained(trial.base(), folder).eval()
        return within("max |logit difference|, peft against yours", gap(trial.logits(theirs), expected), SAME)


def yours_loads_peft(trial: Trial) -> str:
    peft = import_peft()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial.adapted(perturbed=False).save_pretrained(folder)
        config = peft.PeftConfig.from_pretrained(folder)     # the same settings, as peft reads them
        config.inference_mode = False
        theirs = peft.get_peft_model(trial.base(), config)
        perturb(theirs)
        expected = trial.logits(theirs.eval())
        theirs.save_pretrained(folder)
        ours = trial.load(folder)
        return within("max |logit difference|, yours against peft", gap(trial.logits(ours), expected), SAME)


@dataclass(frozen=True)
class Invariant:
    name: str
    check: Callable[[Trial], str]
    meaning: str                  # what it means when it fails: where to look
    needs_peft: bool = False


INVARIANTS = (
    Invariant("plugs in", plugs_in, "the tuner does not build the adapter: check `layers` (which layer types "
              "your layer wraps), update_layer (it must create the trained tensors as nn.Parameters in the dicts "
              "named by adapter_layer_names) and config_class"),
    Invariant("identity at init", starts_as_base, "the adapted model does not start as the base model: the "
              "initial trained values must make the update nothing (a rotation of I, a ΔW of 0)"),
    Invariant("changes the outputs", changes_the_outputs, "the trained tensors never reach the forward pass: "
              "forward_adapters (or get_delta_weight) must use them"),
    Invariant("merge = unmerged", merge_equals_unmerged, "merge_weights does not compute the weight the forward "
              "applies: for y = W' x check the order of the factors and transposes (W Hᵀ is not W H)"),
    Invariant("unmerge restores", unmerge_restores, "unmerge_weights is not the inverse of merge_weights (a "
              "product of reflections is undone in the reverse order)"),
    Invariant("disable = base", disable_equals_base, "switching the adapter off does not give the base model: "
              "the adapter must change nothing outside forward_adapters"),
    Invariant("save / load", save_load, "what is saved is not everything the forward depends on, or loading "
              "rebuilds something different (a random draw that the config's seed should fix)"),
    Invariant("peft loads yours", peft_loads_yours, "your adapter means something else in peft: the names, "
              "shapes or layout of the saved tensors, or the formula, differ from peft's", needs_peft=True),
    Invariant("yours loads peft's", yours_loads_peft, "a folder peft wrote means something else in your class: "
              "read its tensors as peft lays them out", needs_peft=True),
)


@dataclass
class Outcome:
    invariant: Invariant
    passed: bool | None           # None: not run (peft missing, or an earlier invariant failed)
    detail: str

    def __str__(self) -> str:
        mark = {True: "\u2713", False: "\u2717", None: "-"}[self.passed]
        return f"  {mark} {self.invariant.name:<20} {self.detail}"


@dataclass
class Report:
    method: str
    outcomes: list[Outcome]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.passed is False]

    @property
    def first_failure(self) -> Outcome | None:
        return next(iter(self.failures), None)

    @property
    def passed(self) -> bool:
        """Every invariant that applies ran and held (with peft missing, its two did not run: not passed)."""
        return all(o.passed or o.detail.startswith(NOT_APPLICABLE) for o in self.outcomes)

    def __str__(self) -> str:
        return "\n".join([f"{self.method} against the conformance invariants:", *map(str, self.outcomes)])

    def _repr_pretty_(self, printer, cycle) -> None:   # a notebook cell ending with a report shows the lines
        printer.text(str(self))


def grade(tuner_class: type, config: Callable[[], object], *, identity_at_init: bool = True,
          expected_trainable: int | None = None, base_name: str = "pico-llama-1m") -> Report:
    """Every invariant on `tuner_class` with the configs `config()` makes, in order. An exception from the
    method's code fails the invariant that met it (its message is the detail); when the method does not plug
    in, nothing else can run."""
    with registered(tuner_class):   # refuse a class that is not a tuner before loading anything
        pass
    trial = Trial(tuner_class, config, identity_at_init, expected_trainable, base_name)
    outcomes = []
    for invariant in INVARIANTS:
        if invariant.check is starts_as_base and not trial.identity_at_init:
            outcomes.append(Outcome(invariant, None, f"{NOT_APPLICABLE}: this configuration starts away from the base"))
        elif outcomes and outcomes[0].passed is False:
            outcomes.append(Outcome(invariant, None, "not run: the method does not plug in"))
        elif invariant.needs_peft and not peft_installed():
            outcomes.append(Outcome(invariant, None, "skipped: peft is not installed (pip install peft)"))
        else:
            try:
                outcomes.append(Outcome(invariant, True, invariant.check(trial)))
            except Broken as broken:
                outcomes.append(Outcome(invariant, False, str(broken)))
            except Exception as error:   # the method's own code raised: that is this invariant failing
                said = str(error) or ("a method is not written yet" if isinstance(error, NotImplementedError) else "")
                outcomes.append(Outcome(invariant, False, f"{type(error).__name__}: {said}"))
    return Report(tuner_class.__name__, outcomes)
