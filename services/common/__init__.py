"""Code shared by every Aragog service: settings, Redis keys, workflows, pool, policies."""
