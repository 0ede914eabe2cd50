"""The Vault version vaultlog answers as: what ``sys/seal-status`` reports and the CLI prints."""

from __future__ import annotations

VAULT_VERSION = "1.15.0"
CLUSTER_NAME = "vaultlog"
