"""`python -m peftlab.workbook.distributed`: run one rank of a job (under torchrun or accelerate launch), or
`--check` 2 ranks against 1 (`--fsdp --check`: the same with the blocks sharded)."""
import os
import sys

from .check import run_check
from .runner import parser, run_rank


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # `accelerate launch` with an FSDP config file (distributed_type: FSDP) says so in the environment.
    args.fsdp = args.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if args.check:
        return run_check(args)
    summary = run_rank(args)
    if int(os.environ.get("RANK", 0)) == 0:
        print(one_line(summary) + (f"; adapter in {args.out}" if args.out else ""))
    return 0


def one_line(summary: dict) -> str:
    where = f"{summary['method']} on {summary['world_size']} rank(s) ({summary['backend']})"
    if summary.get("fsdp"):
        sent = summary["collective_bytes_per_step"]
        return (f"{where}, FSDP: {sent.get('all-gather', 0):,.0f} bytes all-gathered and "
                f"{sent.get('reduce-scatter', 0):,.0f} reduce-scattered per step, "
                f"{sum(summary['per_rank'][0]['piece_bytes'].values()):,} bytes of parameters kept on rank 0, "
                f"last loss {summary['last_loss']:.3f}")
    return (f"{where}: {summary['allreduce_bytes_per_step']:,.0f} bytes all-reduced per step, "
            f"{summary['trainable']:,} trainable parameters, last loss {summary['last_loss']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
