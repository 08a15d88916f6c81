"""As-built project documentation, written by an observer of run events."""
