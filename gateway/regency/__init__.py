"""The regency service (issue 17): every park's summary and state, from the central broker, in
one view. ``garden-gateway regency --config FILE``.

- :mod:`gateway.regency.config`: its own small YAML (``mqtt``, ``data_dir``, ``api``,
  ``stale_after_s``), environment overrides ``GARDEN_REGENCY_*``;
- :mod:`gateway.regency.fleet`: the parks' states (``up``, ``down``, ``link_down``, ``stale``,
  ``unknown``) from their summaries, their gateways' wills and their bridges' connection topics,
  every transition kept in ``data_dir/regency.sqlite3``;
- :mod:`gateway.regency.service`: the MQTT session on the central broker and the API.
"""
