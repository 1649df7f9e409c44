"""The course: what only the notebooks use, built on the workbook and the library.

- exercises/: one checker module per notebook (nbNN_*.py) and what they share (checking.py);
- experiments/: the comparisons too long for a notebook, whose stored results (results/) the
  notebooks load and re-run in part (`python -m peftlab.course.experiments.<name>`);
- viz.py, image_viz.py: the plots; widgets.py: the interactive explorers (widget_snapshot.py
  keeps them visible in the static site); schematics.py: where each method's parameters sit;
  unified_view.py: every method read as a change of a layer's output (notebook 12);
- site.py: the course as static HTML pages (`make site`);
- assignments.py (with exercise_pairs.py and grading.py): the graded nbgrader edition (`make assignments`);
- progress.py, progress_view.py: every checker's verdict in a local file, and the learner's table of it
  (`python -m peftlab.course progress`, the end of notebook 00).
"""
