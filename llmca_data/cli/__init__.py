"""The ``llmca`` command line (placeholder until the CLI lands)."""


def main() -> None:
    raise SystemExit("llmca CLI not built yet")
