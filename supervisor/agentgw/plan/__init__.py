"""Pure planning: config + observed state -> actions; renderers of unit drop-ins and env files."""
