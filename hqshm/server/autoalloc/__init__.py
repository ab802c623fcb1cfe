"""Automatic allocation (`hq alloc`, spec/deployment.md §6): queues that submit batch jobs
whose nodes run workers. Pure decisions (``state``, ``demand``, ``planner``, ``reconcile``,
``script``, ``parsers``) and the thin edge that runs the batch commands (``runner``,
``service``)."""
