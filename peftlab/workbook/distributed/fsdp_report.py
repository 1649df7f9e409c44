"""What `--fsdp --check` concludes from a 2-rank FSDP run and the same run in one process, and how it says it.

Three laws, each measured on the ranks and compared with a figure computed from the shapes alone:
  equivalence  the losses of every step and the trained adapter agree with one process up to float rounding;
  memory       each rank keeps exactly its pieces of every parameter (rows r*c .. (r+1)*c of dimension 0),
               and the pieces of all ranks add up to one whole copy: nothing is kept twice;
  traffic      the collectives' bytes per step are the blocks gathered twice, the root once, the trainable
               gradients reduce-scattered, one partial norm per trainable tensor all-reduced for clipping;
               and DDP, for comparison, all-reduces the trainable gradients (4 bytes each).
"""
from .collectives import ring_bytes_sent


def fsdp_figures(run: dict, difference: float, moved: float, losses: list[float], tolerance: float) -> dict:
    ranks, world_size = run["per_rank"], run["world_size"]
    pieces = [sum(r["piece_bytes"].values()) for r in ranks]
    whole = sum(run["full_copy_bytes"].values())
    loss_difference = max(abs(a - b) for a, b in zip(run["losses"], losses))
    sent, expected = run["collective_bytes_per_step"], run["collective_bytes_expected"]
    ddp = run["ddp"]["allreduce_bytes_per_step"]
    report = {
        "method": run["method"], "task": run["task"], "steps": run["steps"], "global_batch": run["global_batch"],
        "ranks": world_size, "backend": run["backend"], "trainable": run["trainable"],
        "tolerance": tolerance, "max_abs_difference": difference, "moved": moved,
        "max_loss_difference": loss_difference, "losses": run["losses"],
        "equivalent": difference <= tolerance < moved and loss_difference <= tolerance,
        "ddp_parameter_bytes": whole, "ddp_base_bytes": run["full_copy_bytes"]["frozen"],
        "fsdp_parameter_bytes": pieces, "fsdp_base_bytes": [r["piece_bytes"]["frozen"] for r in ranks],
        "fsdp_parameter_bytes_expected": [sum(r["piece_bytes_expected"].values()) for r in ranks],
        "fsdp_peak_bytes": [max(m["bytes"] for m in r["held_during_step"]) for r in ranks],
        "buffer_bytes": run["buffer_bytes"], "unit_bytes": run["unit_bytes"],
        "quantization_tensors_sharded": run["quantization_tensors_sharded"],
        "held_during_step": [r["held_during_step"] for r in ranks],
        "memory_law": all(r["piece_bytes"] == r["piece_bytes_expected"] for r in ranks) and sum(pieces) == whole,
        "fsdp_bytes_per_step": sent, "fsdp_bytes_expected": expected,
        "collectives_per_step": run["collectives_per_step"],
        "ddp_bytes_per_step": ddp, "ddp_bytes_expected": 4 * run["trainable"],
        "fsdp_ring_bytes_sent": ring_bytes_sent(sent, world_size),
        "ddp_ring_bytes_sent": ring_bytes_sent({"all-reduce": ddp}, world_size),
        "traffic_law": sent == expected and ddp == 4 * run["trainable"],
        "seconds_training": run["seconds"],
    }
    return report | {"passed": report["equivalent"] and report["memory_law"] and report["traffic_law"]}


def print_fsdp_report(r: dict) -> None:
    per_rank = r["global_batch"] // r["ranks"]
    print(f"{r['ranks']} ranks x {per_rank} rows ({r['backend']}, FSDP) against 1 process x {r['global_batch']} rows: "
          f"{r['steps']} steps of {r['method']} on {r['task']}")
    print(f"  losses: largest |difference| {r['max_loss_difference']:.1e} over {r['steps']} steps; weights: "
          f"largest |difference| {r['max_abs_difference']:.1e}, moved by up to {r['moved']:.3f} "
          f"(tolerance {r['tolerance']:.0e})")
    ranks = ", ".join(f"rank {i} {b:,}" for i, b in enumerate(r["fsdp_parameter_bytes"]))
    print(f"  parameter bytes per rank: DDP {r['ddp_parameter_bytes']:,} (a whole copy); FSDP {ranks} "
          f"(its pieces), {max(r['fsdp_peak_bytes']):,} at most while units are gathered")
    sent = r["fsdp_bytes_per_step"]
    print(f"  bytes per step: FSDP all-gathers {sent.get('all-gather', 0):,.0f}, reduce-scatters "
          f"{sent.get('reduce-scatter', 0):,.0f}, all-reduces {sent.get('all-reduce', 0):,.0f}; DDP all-reduces "
          f"{r['ddp_bytes_per_step']:,.0f}. Sent by each rank (ring): FSDP {r['fsdp_ring_bytes_sent']:,.0f}, "
          f"DDP {r['ddp_ring_bytes_sent']:,.0f}")
    failures = [text for law, text in (("equivalent", "the two runs differ beyond the tolerance"),
                                       ("memory_law", "the bytes held are not the shapes' pieces"),
                                       ("traffic_law", "the bytes sent are not the shapes' figures")) if not r[law]]
    print("check passed" if not failures else f"check FAILED ({'; '.join(failures)})")
