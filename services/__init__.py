"""Aragog: just-in-time model selection for serving agentic LLM workflows.

Source folders map to subpackages: services/<service>/ -> aragog.<service>,
scheduler_ext/ -> aragog.scheduler_ext; aragog.v1 is generated from protos/.
"""
