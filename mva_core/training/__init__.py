"""The training harness every training stage (SFT, value vectors, MODPO, reward models) runs in.

``harness`` (``TrainingJob``: threads, precision, TrainingArguments from settings, resume, progress and tracking,
atomic save), ``checkpoints`` (the resume rule), ``records`` (the one training-log and metadata format) and
``guards`` (the NaN/inf loss check). Import from the submodules: this package imports nothing itself, so readers of
``records`` stay light.
"""
