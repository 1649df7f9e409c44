"""python -m peftlab.workbook.data --out DIR : regenerate every bundled data file into DIR."""
import argparse

from .files import DATA_DIR, write_all

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default=str(DATA_DIR), help="folder to write into (default: the bundled data/)")
args = parser.parse_args()
for path in write_all(args.out):
    print(path)
