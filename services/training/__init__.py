"""Training side of routing: datasets, graders, the profiler, the learner, evaluation and
the `aragog-routing` command. Stands on serving's interfaces (aragog.routing); the services
never import it."""
