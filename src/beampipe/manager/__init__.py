"""The pipeline manager: an HTTP service (``beampipe manager``) that deploys pipelines in the
background, one supervisor process each, and answers ``beampipe deploy/list/status/logs/scale/
stop`` (its client)."""
