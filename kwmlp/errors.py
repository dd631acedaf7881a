"""The package's one exception type for user errors (bad input, wrong file, missing extra)."""


class KwmlpError(ValueError):
    """A user error: the message is one sentence meant for the person who caused it.

    The CLI prints it on one line and exits with 1; library callers can catch it as
    ``ValueError``.
    """


def missing_extra(package: str, extra: str) -> KwmlpError:
    return KwmlpError(f"{package} is not installed; install it with: pip install 'kwmlp-rt[{extra}]'")
