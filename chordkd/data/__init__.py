"""Corpora on disk (manifests), the decoded-audio cache and the Lightning data modules."""
