"""The course's conformance grader (peftlab/course/conformance.py, notebook 17): the library's own methods pass
it, each invariant fails on a method broken in the way it describes (and says so), the registry comes back
as it was, and without peft the peft round trip is reported as not run, never as passed."""
import pytest
import torch
from torch import nn

from peftlab import FourierFTConfig, HRAConfig, LoraConfig, OFTConfig
from peftlab.config import CONFIG_REGISTRY
from peftlab.course import conformance
from peftlab.course.conformance import INVARIANTS, grade, registered
from peftlab.tuners import TUNERS, LayerTuner
from peftlab.tuners.fourierft import FourierFTLayer, FourierFTModel
from peftlab.tuners.hra import HRALayer, HRAModel
from peftlab.tuners.lora import LoraModel
from peftlab.tuners.oft import BlockRotation, OFTLayer, OFTModel
from peftlab.workbook.runtime import one_thread

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft.*", "ignore::FutureWarning")

TARGETS = ["q_proj", "v_proj"]
HRA = lambda: HRAConfig(r=8, target_modules=TARGETS)
FOURIER = lambda: FourierFTConfig(n_frequency=64, init_weights=True, target_modules=TARGETS)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with one_thread():
        yield


def outcome(report, name: str):
    return next(o for o in report.outcomes if o.invariant.name == name)


@pytest.mark.parametrize("tuner,config,trainable", [
    (OFTModel, lambda: OFTConfig(oft_block_size=16, r=0, use_cayley_neumann=False, target_modules=TARGETS), 7_680),
    (HRAModel, HRA, 8_192),
    (FourierFTModel, FOURIER, 512),
    (LoraModel, lambda: LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), 7_168),
], ids=["oft", "hra", "fourierft", "lora"])
def test_the_librarys_methods_pass_every_invariant(tuner, config, trainable):
    report = grade(tuner, config, expected_trainable=trainable)
    assert report.passed and not report.failures, str(report)
    assert [o.invariant.name for o in report.outcomes] == [i.name for i in INVARIANTS]
    assert f"{trainable:,} trainable numbers" in outcome(report, "plugs in").detail


# --- methods broken one way each --------------------------------------------------------------------------

class UnpairedHRALayer(HRALayer):
    """Directions all drawn at random: H is not I at the start."""
    def update_layer(self, name, config):
        super().update_layer(name, config)
        with torch.no_grad():
            self.hra_u[name].copy_(torch.randn(self.hra_u[name].shape, generator=torch.Generator().manual_seed(0)))


class SameOrderUnmergeHRALayer(HRALayer):
    """Undoes H_1 ··· H_r by applying it again in the same order."""
    def unmerge_weights(self, name, weight, bias):
        return self.reflect(weight, name), bias


class TransposedMergeHRALayer(HRALayer):
    """Merges W Hᵀ where the forward applies W H."""
    def merge_weights(self, name, weight, bias):
        return self.reflect(weight, name, inverse=True), bias

    def unmerge_weights(self, name, weight, bias):
        return self.reflect(weight, name), bias


class IdleHRALayer(HRALayer):
    """Trains U but never uses it."""
    def forward_adapters(self, names, x, *args, **kwargs):
        return self.base_layer(x, *args, **kwargs)


class UnfinishedHRALayer(HRALayer):
    def update_layer(self, name, config):
        raise NotImplementedError


class LeakyFourierLayer(FourierFTLayer):
    """Switched off, it still adds its update."""
    def base_forward(self, x, *args, **kwargs):
        return self.forward_adapters(["default"], x, *args, **kwargs)


class UnseededFourierLayer(FourierFTLayer):
    """Draws its places from the global random state: a load draws other places."""
    def update_layer(self, name, config):
        super().update_layer(name, config)
        out_features, in_features = self.out_in
        flat = torch.randperm(out_features * in_features)[:config.n_frequency]
        self.indices[name] = torch.stack([flat // in_features, flat % in_features])


class OtherSeedFourierLayer(FourierFTLayer):
    """Seeded, but not as peft draws: loads in itself, means something else in peft."""
    def update_layer(self, name, config):
        super().update_layer(name, config)
        out_features, in_features = self.out_in
        g = torch.Generator().manual_seed(config.random_loc_seed + 1)
        flat = torch.randperm(out_features * in_features, generator=g)[:config.n_frequency]
        self.indices[name] = torch.stack([flat // in_features, flat % in_features])


def tuner_with(layer: type, base: type) -> type:
    return type(f"{layer.__name__}Model", (base,), {"layers": {nn.Linear: layer}})


@pytest.mark.parametrize("layer,base,config,broken", [
    (UnpairedHRALayer, HRAModel, HRA, "identity at init"),
    (IdleHRALayer, HRAModel, HRA, "changes the outputs"),
    (TransposedMergeHRALayer, HRAModel, HRA, "merge = unmerged"),
    (SameOrderUnmergeHRALayer, HRAModel, HRA, "unmerge restores"),
    (LeakyFourierLayer, FourierFTModel, FOURIER, "disable = base"),
    (UnseededFourierLayer, FourierFTModel, FOURIER, "save / load"),
    (OtherSeedFourierLayer, FourierFTModel, FOURIER, "peft loads yours"),
], ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", ""))
def test_each_invariant_fails_on_the_defect_it_describes_and_says_what_it_means(layer, base, config, broken):
    report = grade(tuner_with(layer, base), config)
    assert not report.passed
    failed = report.first_failure
    assert failed.invariant.name == broken, str(report)
    assert failed.invariant.meaning and str(failed).lstrip().startswith("\u2717")


class PaperSignRotation(BlockRotation):
    """Qiu et al.'s (I + Q)(I − Q)⁻¹, which is peft's (I − Q)(I + Q)⁻¹ transposed."""
    def rotations(self, dropout=False):
        return super().rotations(dropout).transpose(1, 2)


class PaperSignOFTLayer(OFTLayer):
    def update_layer(self, name, config):
        super().update_layer(name, config)
        self.stored[name].__class__ = PaperSignRotation


def test_oft_with_the_paper_s_sign_is_a_sound_method_that_peft_reads_backwards():
    """The pitfall docs/INSTRUCTORS.md names for notebook 17: every invariant holds but peft's round trips."""
    config = lambda: OFTConfig(oft_block_size=16, r=0, use_cayley_neumann=False, target_modules=TARGETS)
    report = grade(tuner_with(PaperSignOFTLayer, OFTModel), config)
    assert [o.invariant.name for o in report.failures] == ["peft loads yours", "yours loads peft's"]


def test_the_other_direction_fails_when_peft_s_folder_means_something_else():
    report = grade(tuner_with(OtherSeedFourierLayer, FourierFTModel), FOURIER)
    assert outcome(report, "yours loads peft's").passed is False


def test_a_method_that_does_not_plug_in_stops_the_rest():
    report = grade(tuner_with(UnfinishedHRALayer, HRAModel), HRA)
    first, *rest = report.outcomes
    assert first.passed is False and "NotImplementedError" in first.detail
    assert all(o.passed is None and "does not plug in" in o.detail for o in rest)


def test_a_wrong_parameter_count_is_a_failure_of_plugging_in():
    report = grade(HRAModel, HRA, expected_trainable=8_000)
    assert report.first_failure.invariant.name == "plugs in"
    assert "8,192 trainable numbers, the method's formula gives 8,000" in report.first_failure.detail


def test_an_init_away_from_the_base_skips_only_the_identity(monkeypatch):
    report = grade(FourierFTModel, lambda: FourierFTConfig(n_frequency=64, target_modules=TARGETS),
                   identity_at_init=False)
    assert report.passed and outcome(report, "identity at init").passed is None


def test_without_peft_its_round_trips_are_not_run_and_the_report_does_not_pass(monkeypatch):
    monkeypatch.setattr(conformance, "peft_installed", lambda: False)
    report = grade(HRAModel, HRA)
    skipped = [o for o in report.outcomes if o.passed is None]
    assert [o.invariant.name for o in skipped] == ["peft loads yours", "yours loads peft's"]
    assert all("pip install peft" in o.detail for o in skipped)
    assert not report.failures and not report.passed


def test_registered_swaps_the_tuner_for_the_block_and_gives_the_library_s_back():
    mine = tuner_with(IdleHRALayer, HRAModel)
    library = TUNERS["HRA"], CONFIG_REGISTRY["HRA"]
    with registered(mine):
        assert TUNERS["HRA"] is mine
    assert (TUNERS["HRA"], CONFIG_REGISTRY["HRA"]) == library
    with pytest.raises(RuntimeError), registered(mine):
        raise RuntimeError("a failing cell")
    assert TUNERS["HRA"] is library[0]


def test_registered_removes_a_peft_type_the_library_does_not_have():
    class NewConfig(HRAConfig):
        peft_type = "NOT_A_METHOD"
    mine = type("NewModel", (HRAModel,), {"config_class": NewConfig})
    with registered(mine):
        assert TUNERS["NOT_A_METHOD"] is mine
    assert "NOT_A_METHOD" not in TUNERS and "NOT_A_METHOD" not in CONFIG_REGISTRY


@pytest.mark.parametrize("thing,message", [
    (HRALayer, "takes a tuner class"), (HRAModel.__name__, "takes a tuner class"),
    (type("NoConfig", (LayerTuner,), {}), "config_class must be a config class with a peft_type")])
def test_registered_refuses_what_is_not_a_tuner_class(thing, message):
    with pytest.raises(TypeError, match=message), registered(thing):
        pass
