"""`python -m peftlab.workbook.distributed`: run one rank of a job (under torchrun), or `--check` 2 ranks against 1."""
import os
import sys

from .check import run_check
from .runner import parser, run_rank


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.check:
        return run_check(args)
    summary = run_rank(args)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"{summary['method']} on {summary['world_size']} rank(s) ({summary['backend']}): "
              f"{summary['allreduce_bytes_per_step']:,.0f} bytes all-reduced per step, "
              f"{summary['trainable']:,} trainable parameters, last loss {summary['last_loss']:.3f}"
              + (f"; adapter in {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
