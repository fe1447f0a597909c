"""Turns the notebook suite into a self-contained Kaggle submission notebook (see build.py)."""
