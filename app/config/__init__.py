"""The service's configuration: one row per key (settings.py), one reader (toml.py), start-up loading (load.py),
the validated effective configuration (effective.py), the published snapshot (snapshot.py) and the service that
changes it (service.py)."""
