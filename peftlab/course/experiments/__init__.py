"""Experiments behind the notebooks' comparisons: runs too long for a notebook cell.

Each module is a script (`python -m peftlab.course.experiments.<name>`) that writes its results, with
the settings, versions and machine it ran on, to `results/<name>.json` in the repository. The
notebook that makes the claim loads that file, shows it, and re-runs a row or two live to check
that the stored numbers still come out of the code.
"""
