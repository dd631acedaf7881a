"""The package's one exception type for user errors (bad input, wrong file, missing extra)."""


class KwmlpError(ValueError):
    """A user error: the message is one sentence meant for the person who caused it.

    The CLI prints it on one line and exits with 1; library callers can catch it as
    ``ValueError``.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to many), or its type's name."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def install_command(extra: str) -> str:
    """What installs one of the optional extras (``pyproject.toml``) from a clone of kwmlp-rt."""
    return f"pip install -e '.[{extra}]'"


def missing_extra(package: str, extra: str, needed_for: str = "") -> KwmlpError:
    """The one sentence for an optional dependency that is not installed."""
    what = f"{needed_for} needs {package}, which is not installed" if needed_for else f"{package} is not installed"
    return KwmlpError(f"{what}; install it with: {install_command(extra)}")
