"""The shipped YAML configs, installed as ``clsp.configs``: ``clsp demo digits`` (or ``configs/digits.yaml``) finds
them from any folder (see :func:`clsp.config.resolve_config_path`)."""
