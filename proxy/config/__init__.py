"""Loading routes.yaml: the frozen config values (`model`), the YAML walk and the key tables that
validate it (`loader`, `schema`, `scalars`, `yaml_walk`, `units`), and the generated docs (`keydocs`). Pure: it
never imports the serving side or the upstream client.
"""
