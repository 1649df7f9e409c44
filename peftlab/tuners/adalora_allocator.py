"""AdaLoRA's rank allocator: how much each singular triplet matters, and which ones keep their place.

Each AdaLoRA layer holds its update as triplets (P[:, i], λ_i, Q[i, :]) (tuners/adalora.py). The
allocator gives every triplet a score from its weights' importance and, on a schedule, sets the
λ of the lowest-scoring triplets to zero, so that the budget (triplets kept, all layers together)
falls from init_r per layer to target_r per layer on average. Layers that matter keep more.

Importance of one weight w at step t (Zhang et al. 2023, section 3.2), with ∇w the gradient:
    I_t = |w · ∇w|                              sensitivity: the loss change if w were set to 0
    Ī_t = β1 Ī_{t-1} + (1 − β1) I_t             smoothed sensitivity (`exp_avg_ipt`, peft's name)
    Ū_t = β2 Ū_{t-1} + (1 − β2) |I_t − Ī_t|     uncertainty of that estimate (`exp_avg_unc`)
    s_t(w) = Ī_t · Ū_t
Triplet score: S_i = s(λ_i) + mean_j s(P_ji) + mean_j s(Q_ij).

Budget after step t, b0 = init_r × layers and bT = target_r × layers (T = total_step):
    b0                                                      t ≤ tinit           (warm-up: all kept)
    bT + (b0 − bT) · (1 − (t − tinit) / (T − tfinal − tinit))³   up to T − tfinal  (cubic decrease)
    bT                                                      after               (fixed)
During the decrease, every deltaT steps the b0 − b(t) lowest scores have λ set to zero. Masked is
not removed: P and Q keep their values and λ keeps its gradient, so a triplet whose score rises
wins its place back at the next allocation. At step T − tfinal the last allocation (to bT) fixes
the pattern; afterwards only the masked λ are zeroed again after each step.

The scores are kept per factor under the factor's parameter name in the model
("model.layers.0.self_attn.q_proj.lora_A.default"), as peft keeps them.
"""
import torch

FACTORS = ("lora_A", "lora_B", "lora_E")   # Q (r, in), P (out, r), Λ (r, 1)


def module_of(key: str, adapter_name: str) -> str:
    """The module a rank_pattern key names: "<module>.lora_E" (peft's file) or "<module>.lora_E.<adapter>"."""
    key = key.removesuffix(f".{adapter_name}")
    if not key.endswith(".lora_E"):
        raise ValueError(f"rank_pattern key {key!r} should name an AdaLoRA layer's singular values, "
                         "'<module>.lora_E' (as AdaLoRA writes it).")
    return key.removesuffix(".lora_E")


def masks_by_module(rank_pattern: dict, adapter_name: str) -> dict[str, list[bool]]:
    """{module name: which triplets are kept} from a config's rank_pattern."""
    return {module_of(key, adapter_name): list(keep) for key, keep in rank_pattern.items()}


class RankAllocator:
    """Importance scores and the budget of one trainable AdaLoRA adapter (see the module docstring).

    `layers` arguments are {module name: AdaLoRA layer holding the adapter}, in the model's order.
    """

    def __init__(self, config, adapter_name: str, layers: dict):
        self.config, self.adapter_name = config, adapter_name
        self.init_budget = sum(layer.r[adapter_name] for layer in layers.values())
        self.target_budget = config.target_r * len(layers)
        self.reset_importance()

    def reset_importance(self) -> None:
        self.sensitivity: dict[str, torch.Tensor] = {}   # I_t, the last step's |w · ∇w|
        self.exp_avg_ipt: dict[str, torch.Tensor] = {}   # Ī_t
        self.exp_avg_unc: dict[str, torch.Tensor] = {}   # Ū_t

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """(triplets to keep after `step`, whether to mask at this step)."""
        c = self.config
        if step <= c.tinit:
            return self.init_budget, False
        if step > c.total_step - c.tfinal:
            return self.target_budget, True
        remaining = 1 - (step - c.tinit) / (c.total_step - c.tfinal - c.tinit)
        budget = int((self.init_budget - self.target_budget) * remaining ** 3 + self.target_budget)
        return budget, step % c.deltaT == 0

    def factors(self, layers: dict) -> dict[str, torch.nn.Parameter]:
        """{parameter name in the model: P, Λ or Q} of every layer."""
        return {f"{module}.{factor}.{self.adapter_name}": getattr(layer, factor)[self.adapter_name]
                for module, layer in layers.items() for factor in FACTORS}

    @torch.no_grad()
    def update_importance(self, layers: dict) -> None:
        """Fold this step's sensitivities into the two moving averages (needs the gradients)."""
        beta1, beta2 = self.config.beta1, self.config.beta2
        for name, weight in self.factors(layers).items():
            if weight.grad is None:
                raise ValueError(f"{name} has no gradient: call update_and_allocate after backward() and "
                                 "before the gradients are cleared (train(..., on_step=...) does).")
            if name not in self.exp_avg_ipt:
                self.exp_avg_ipt[name] = torch.zeros_like(weight)
                self.exp_avg_unc[name] = torch.zeros_like(weight)
            sensitivity = self.sensitivity[name] = (weight * weight.grad).abs()
            self.exp_avg_ipt[name] = beta1 * self.exp_avg_ipt[name] + (1 - beta1) * sensitivity
            self.exp_avg_unc[name] = (beta2 * self.exp_avg_unc[name]
                                      + (1 - beta2) * (sensitivity - self.exp_avg_ipt[name]).abs())

    def score(self, name: str) -> torch.Tensor:
        """s(w) = Ī · Ū for every entry of one factor."""
        if name not in self.exp_avg_ipt:
            raise ValueError(f"No importance scores for {name} yet: update_and_allocate must run at "
                             "steps before total_step - tfinal to measure them.")
        return self.exp_avg_ipt[name] * self.exp_avg_unc[name]

    def triplet_scores(self, layers: dict) -> dict[str, torch.Tensor]:
        """{module name: S, one score per triplet, (r,)}."""
        scores = {}
        for module in layers:
            name = f"{module}.%s.{self.adapter_name}"
            singular_vectors = self.score(name % "lora_A").mean(dim=1) + self.score(name % "lora_B").mean(dim=0)
            scores[module] = self.score(name % "lora_E").view(-1) + singular_vectors
        return scores

    @torch.no_grad()
    def mask_to_budget(self, layers: dict, budget: int) -> dict[str, list[bool]]:
        """Zero the λ of all but the `budget` best triplets; return the rank pattern
        {"<module>.lora_E": [kept?] per triplet}. Ties at the threshold are all masked (as in peft)."""
        scores = self.triplet_scores(layers)
        to_mask = self.init_budget - budget
        # Nothing to mask when the target is the initial rank (peft would fail on the k=0 below).
        threshold = torch.kthvalue(torch.cat(list(scores.values())), k=to_mask).values.item() \
            if to_mask > 0 else float("-inf")
        rank_pattern = {}
        for module, layer in layers.items():
            masked = scores[module] <= threshold
            layer.lora_E[self.adapter_name].masked_fill_(masked.view(-1, 1), 0.0)
            rank_pattern[f"{module}.lora_E"] = (~masked).tolist()
        return rank_pattern

    @torch.no_grad()
    def mask_using_rank_pattern(self, layers: dict, rank_pattern: dict) -> None:
        """Zero the λ that `rank_pattern` masks again (the optimizer moves them after each step)."""
        keep = masks_by_module(rank_pattern, self.adapter_name)
        for module, layer in layers.items():
            singular_values = layer.lora_E[self.adapter_name]
            kept = torch.tensor(keep[module], dtype=torch.bool, device=singular_values.device)
            singular_values.masked_fill_(~kept.view(-1, 1), 0.0)
