"""The error every layer raises for input a user can fix: flags, files, settings."""


class UsageError(ValueError):
    """Flags that do not fit together; the message names the flag and says what to do.
    The scripts print it as one line and exit with status 2 (`bert_tf.cli`)."""
