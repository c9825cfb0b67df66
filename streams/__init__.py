"""retention-scorer streaming shell: Faust app, topics, tables, agents, web views, CLI."""
