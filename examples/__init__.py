"""Worked examples of credref's training and scoring core on catalogues that are not
credref's own (run from the repository root; not part of the installed product)."""
