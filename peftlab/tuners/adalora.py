"""AdaLoRA: adaptive budget allocation for LoRA (Zhang et al. 2023, "AdaLoRA: Adaptive Budget
Allocation for Parameter-Efficient Fine-Tuning", arXiv:2303.10512).

LoRA gives every layer the same rank. AdaLoRA starts every layer at init_r and, while training,
moves the budget to the layers that matter. For that the update is kept in the shape of an SVD:

    y = W x + s / (r0 + 1e-5) · P Λ Q x     P: (out, r) `lora_B`, Λ: (r, 1) `lora_E`, Q: (r, in) `lora_A`

with s = lora_alpha and r0 = `ranknum`, the layer's rank when it was created (kept when triplets
are masked or cut, so the scale never jumps). P and Q start ~ N(0, 0.02) and Λ at zero, so the
adapted model starts as the base model. Dropping a triplet (P[:, i], λ_i, Q[i, :]) is then just
λ_i = 0, a cheap and reversible way to lower a layer's rank; with plain B A one could not tell
which rank-one piece to drop.

P and Q are kept close to orthogonal, so that the triplets stay independent and masking one does
not change the others, by a penalty added to the loss:

    R = mean over the layers' P and Q of ||PᵀP − I||_F and ||QQᵀ − I||_F      loss + orth_reg_weight · R

(the paper writes squared norms; its code and peft use the norms themselves, and so does peftlab).
Which triplets survive is decided from their importance: the sensitivity |w · ∇w| of each weight,
smoothed by an EMA (β1) and multiplied by an EMA of its uncertainty (β2), summed over a triplet;
the budget falls from init_r to target_r per layer on a cubic schedule between step tinit and step
total_step − tfinal, re-decided every deltaT steps, and the λ below the budget's threshold are
masked; in the final tfinal steps the pattern is fixed (tuners/adalora_allocator.py).

Training, as in peft: the penalty is part of the model's loss whenever a trainable AdaLoRA
adapter exists and the model computes a loss (labels given), so the loop needs nothing for it;
the allocation is one call after each optimizer step, while the gradients are still there:

    history = train(model, data, collate, steps=config.total_step, lr=...,
                    on_step=model.base_model.update_and_allocate)

(a loop that computes its loss from the logits can add `orth_reg_weight *
model.base_model.orthogonality_penalty()` itself, e.g. as train's `extra_loss`). The final
allocation writes the kept triplets to the config's `rank_pattern` ({"<module>.lora_E": [kept?
per triplet]}); saving then stores only the kept triplets, and loading cuts the layers to them
first, as peft does, so the folders load in both libraries.

Where peftlab differs from peft: peft adds the penalty only when its PeftModel has a task_type
(otherwise it skips the tuner's forward) and also when the adapter is disabled; peftlab adds it
whenever a trainable adapter is there and switched on. A frozen (loaded) adapter adds none (peft
fails there). rank_pattern keys leave out the adapter's name in memory too (peft strips it when
saving). Options that AdaLoRA ignores in peft (use_rslora, alpha_pattern, inits other than
True / False) are refused.
"""
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.config import check_field_types

from .adalora_allocator import RankAllocator, masks_by_module
from .layer import BaseTunerLayer
from .layer_tuner import PREFIX, LayerTuner, record_fan_in_fan_out
from .lora_config import LoraConfig
from .registry import register_method


@dataclass
class AdaLoraConfig(LoraConfig):
    """AdaLoRA, as `peft.AdaLoraConfig` (LoRA's fields, of which `r` is not used: init_r is).

    init_r: every layer's rank at the start.   target_r: the average rank per layer at the end.
    total_step: the number of training steps (required: the schedule is laid out on it).
    tinit: steps before any masking.   tfinal: steps at the end with the pattern fixed.
    deltaT: steps between two allocations while the budget falls.
    beta1 / beta2: EMA factors of the sensitivity and of its uncertainty.
    orth_reg_weight: weight of the orthogonality penalty on P and Q.
    rank_pattern: written by the final allocation, {"<module>.lora_E": [kept? per triplet]};
        a saved adapter holds only the kept triplets, and loading cuts the layers to them.
    lora_alpha: the update is scaled by lora_alpha / init_r.
    """
    peft_type: ClassVar[str] = "ADALORA"

    target_r: int = 8
    init_r: int = 12
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None
    rank_pattern: dict | None = None

    def __post_init__(self):
        # LoRA checks its rank_pattern holds ranks; AdaLoRA's holds masks, checked below.
        rank_pattern, self.rank_pattern = self.rank_pattern, None
        super().__post_init__()
        self.rank_pattern = rank_pattern
        check_field_types(self)   # rank_pattern's own type, hidden from LoRA's checks above
        if self.use_dora:
            raise ValueError("AdaLoRA does not support DoRA (use_dora=True), as in peft.")
        if self.use_rslora or self.alpha_pattern:
            raise ValueError("AdaLoRA scales its update by lora_alpha / init_r; use_rslora and alpha_pattern "
                             "do not apply (peft ignores them), so they are refused.")
        if not isinstance(self.init_lora_weights, bool):
            raise ValueError("AdaLoRA starts P, Q ~ N(0, 0.02) and Λ = 0 (init_lora_weights=True) or all ~ N(0, 1) "
                             f"(False, for tests); init_lora_weights={self.init_lora_weights!r} does not apply.")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern needs layers_to_transform too (as in peft).")
        if self.r != 8:   # LoraConfig's default
            warnings.warn("AdaLoRA does not use r; set the initial rank with init_r.", stacklevel=3)
        if self.total_step is None or self.total_step <= 0:
            raise ValueError("AdaLoRA needs total_step > 0, the number of training steps: the rank budget's "
                             "schedule is laid out on it.")
        if self.tinit >= self.total_step - self.tfinal:
            raise ValueError(f"tinit={self.tinit} and tfinal={self.tfinal} leave no steps of total_step="
                             f"{self.total_step} for allocating the budget; lower them or raise total_step.")
        if not 0 <= self.target_r <= self.init_r or self.init_r < 1:
            raise ValueError(f"Need 0 <= target_r <= init_r and init_r >= 1, got target_r={self.target_r}, "
                             f"init_r={self.init_r}: AdaLoRA only lowers ranks.")
        if self.deltaT < 1:
            raise ValueError(f"deltaT (steps between allocations) must be at least 1, got {self.deltaT}.")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in (0, 1), got {self.beta1}, {self.beta2}.")
        if self.orth_reg_weight < 0:
            raise ValueError(f"orth_reg_weight must be >= 0, got {self.orth_reg_weight}.")
        for key, keep in (self.rank_pattern or {}).items():
            if not isinstance(keep, list) or not all(isinstance(k, bool) for k in keep):
                raise ValueError(f"rank_pattern[{key!r}] must be a list of booleans (one per triplet: kept?), "
                                 f"got {keep!r}.")


class AdaLoraLayer(BaseTunerLayer):
    """An SVD-shaped update P Λ Q around nn.Linear or Conv1D (peft's SVDLinear)."""
    adapter_layer_names = ("lora_A", "lora_B", "lora_E")
    other_param_names = ("r", "lora_alpha", "scaling", "lora_dropout", "ranknum")

    def __init__(self, base_layer: nn.Module, module_name: str = ""):
        super().__init__(base_layer, module_name)
        # In this order, so that named_parameters lists them as peft does.
        self.lora_A = nn.ParameterDict()    # Q, (r, in): right singular vectors
        self.lora_B = nn.ParameterDict()    # P, (out, r): left singular vectors
        self.lora_E = nn.ParameterDict()    # Λ, (r, 1): singular values
        self.ranknum = nn.ParameterDict()   # r0, the rank at creation, frozen: the update's scale
        self.r, self.lora_alpha, self.scaling = {}, {}, {}
        self.lora_dropout = nn.ModuleDict()

    def update_layer(self, name: str, config: AdaLoraConfig) -> None:
        r = config.init_r
        self.r[name], self.lora_alpha[name] = r, config.lora_alpha
        self.scaling[name] = config.lora_alpha if config.lora_alpha > 0 else float(r)   # peft's rule
        p = config.lora_dropout
        self.lora_dropout[name] = nn.Dropout(p) if p > 0 else nn.Identity()
        out_features, in_features = self.get_base_weight().shape
        made = {"dtype": self.compute_dtype, "device": self.base_device}
        self.lora_A[name] = nn.Parameter(torch.empty(r, in_features, **made))
        self.lora_B[name] = nn.Parameter(torch.empty(out_features, r, **made))
        self.lora_E[name] = nn.Parameter(torch.empty(r, 1, **made))
        self.ranknum[name] = nn.Parameter(torch.full((1,), float(r), **made), requires_grad=False)
        with torch.no_grad():
            if config.init_lora_weights:   # Λ = 0: the update starts at zero
                nn.init.zeros_(self.lora_E[name])
                nn.init.normal_(self.lora_A[name], std=0.02)
                nn.init.normal_(self.lora_B[name], std=0.02)
            else:                          # all random: the adapter acts from the start (tests)
                for factor in (self.lora_A, self.lora_E, self.lora_B):
                    nn.init.normal_(factor[name])

    def keep_triplets(self, name: str, keep: list[bool]) -> None:
        """Cut the adapter to the triplets `keep` marks (loading a pruned adapter); the scale stays."""
        if len(keep) != self.r[name]:
            raise ValueError(f"rank_pattern has {len(keep)} entries for {self.module_name}, whose rank is "
                             f"{self.r[name]}: the adapter was saved with another init_r.")
        index = torch.tensor(keep, dtype=torch.bool, device=self.lora_E[name].device)
        with torch.no_grad():
            self.lora_A[name] = nn.Parameter(self.lora_A[name][index])
            self.lora_B[name] = nn.Parameter(self.lora_B[name][:, index])
            self.lora_E[name] = nn.Parameter(self.lora_E[name][index])
        self.r[name] = int(index.sum())

    def get_delta_weight(self, name: str) -> torch.Tensor:
        # Written as peft computes it, so that the two agree to the last bit where they can.
        return self.lora_B[name] @ (self.lora_A[name] * self.lora_E[name]) * self.scaling[name] \
            / (self.ranknum[name] + 1e-5)                                                     # (out, in)

    def adapter_output(self, name: str, x: torch.Tensor) -> torch.Tensor:
        A, B, E = self.lora_A[name], self.lora_B[name], self.lora_E[name]
        x = self.lora_dropout[name](x.to(A.dtype))
        return (x @ (A * E).T @ B.T) * self.scaling[name] / (self.ranknum[name] + 1e-5)     # (..., out)


@register_method
class AdaLoraModel(LayerTuner):
    """AdaLoRA's tuner: SVD-shaped layers, the orthogonality penalty, the rank budget.

    One adapter trains at a time (others can be added with inference_mode=True), as in peft;
    `rankallocator` (peft's name) serves it.
    """
    config_class = AdaLoraConfig
    layers = {nn.Linear: AdaLoraLayer, Conv1D: AdaLoraLayer}
    # Targets used when target_modules is None (a subset of peft's AdaLoRA table).
    default_targets = {
        "llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"],
        "gemma": ["q_proj", "v_proj"], "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        "gpt2": ["c_attn"], "bert": ["query", "value"], "roberta": ["query", "key", "value", "dense"],
        "gpt_neox": ["query_key_value"],
    }

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.rankallocator: RankAllocator | None = None
        self.adapters_disabled = False

    @property
    def trainable_adapter_name(self) -> str | None:
        return None if self.rankallocator is None else self.rankallocator.adapter_name

    def adalora_layers(self, adapter_name: str) -> dict[str, AdaLoraLayer]:
        """{module name: layer} of the layers holding `adapter_name`, in the model's order."""
        return {n: m for n, m in self.wrappers() if isinstance(m, AdaLoraLayer) and adapter_name in m}

    # --- creating and removing -------------------------------------------------------------
    def prepare_config(self, config):
        record_fan_in_fan_out(self, config)

    def check_new_adapter(self, config):
        trainable = [c for c in (*self.peft_config.values(), config) if not c.inference_mode]
        if len(trainable) > 1:
            raise ValueError("AdaLoRA trains one adapter at a time (as in peft): add the others with "
                             "inference_mode=True.")

    def inject(self, adapter_name, config, *, tokenizer=None, for_loading=False):
        super().inject(adapter_name, config, tokenizer=tokenizer, for_loading=for_loading)
        layers = self.adalora_layers(adapter_name)
        if for_loading and config.rank_pattern:   # the folder holds only the kept triplets
            for module, keep in masks_by_module(config.rank_pattern, adapter_name).items():
                if module not in layers:
                    raise ValueError(f"rank_pattern names {module}, which holds no AdaLoRA layer of this model.")
                layers[module].keep_triplets(adapter_name, keep)
        if not config.inference_mode:
            self.rankallocator = RankAllocator(config, adapter_name, layers)

    def remove(self, adapter_name):
        super().remove(adapter_name)
        if self.trainable_adapter_name == adapter_name:
            self.rankallocator = None

    def adapter_state_dict(self, adapter_name):
        """The saved tensors: after the final allocation only the kept triplets (as peft saves them).
        Those are copies, not the live tensors, until the layers are cut (by loading the folder):
        load a saved AdaLoRA adapter with from_pretrained or load_adapter, not into a trained one."""
        out = super().adapter_state_dict(adapter_name)
        rank_pattern = self.peft_config[adapter_name].rank_pattern if adapter_name in self.peft_config else None
        layers = self.adalora_layers(adapter_name)
        for module, keep in masks_by_module(rank_pattern or {}, adapter_name).items():
            layer = layers.get(module)
            if layer is None or sum(keep) == layer.r[adapter_name]:   # already cut (a loaded adapter)
                continue
            index = torch.tensor(keep, dtype=torch.bool, device=layer.lora_E[adapter_name].device)
            key = f"{PREFIX}{module}.%s"
            for factor in ("lora_A", "lora_E"):
                out[key % factor] = out[key % factor][index]
            out[key % "lora_B"] = out[key % "lora_B"][:, index]
        return out

    # --- training ----------------------------------------------------------------------------
    def orthogonality_penalty(self, adapter_name: str | None = None) -> torch.Tensor:
        """R: the mean of ||QQᵀ − I||_F and ||PᵀP − I||_F over the adapter's layers (default: the
        trainable adapter); zero when every Q has orthonormal rows and every P orthonormal columns."""
        name = adapter_name or self.trainable_adapter_name or self.active_adapter
        total, count = 0, 0
        for layer in self.adalora_layers(name).values():
            Q, P = layer.lora_A[name], layer.lora_B[name]
            for gram in (Q @ Q.T, P.T @ P):   # (r, r) each
                eye = torch.eye(*gram.shape, dtype=gram.dtype, device=gram.device)
                total = total + torch.norm(gram - eye, p="fro")
                count += 1
        return total / count if count else torch.zeros(())

    def forward(self, *args, adapter_names=None, **kwargs):
        outputs = super().forward(*args, adapter_names=adapter_names, **kwargs)
        loss = getattr(outputs, "loss", None)
        if isinstance(loss, torch.Tensor) and self.rankallocator is not None and not self.adapters_disabled:
            weight = self.peft_config[self.trainable_adapter_name].orth_reg_weight
            if weight > 0:
                outputs.loss = loss + weight * self.orthogonality_penalty()
        return outputs

    def set_disabled(self, disabled):
        super().set_disabled(disabled)
        self.adapters_disabled = disabled

    def update_and_allocate(self, global_step: int) -> None:
        """Measure importance and mask to the budget of `global_step`; call it after each optimizer
        step, before the gradients are cleared (train(..., on_step=model.base_model.update_and_allocate))."""
        allocator = self.rankallocator
        if allocator is None:
            raise ValueError("No trainable AdaLoRA adapter here (loaded with is_trainable=False?), so "
                             "there is no rank budget to allocate.")
        config = self.peft_config[allocator.adapter_name]
        layers = self.adalora_layers(allocator.adapter_name)
        fixed_from = config.total_step - config.tfinal
        if global_step < fixed_from:     # measure; while the budget falls, mask every deltaT steps
            allocator.update_importance(layers)
            budget, mask_now = allocator.budget_schedule(global_step)
            if mask_now:
                config.rank_pattern = allocator.mask_to_budget(layers, budget)
        elif global_step == fixed_from:  # the last allocation, to the target budget, fixes the pattern
            config.rank_pattern = allocator.mask_to_budget(layers, allocator.budget_schedule(global_step)[0])
            allocator.reset_importance()
        else:                            # fixed phase: the optimizer moved the masked λ, zero them again
            allocator.mask_using_rank_pattern(layers, config.rank_pattern)
