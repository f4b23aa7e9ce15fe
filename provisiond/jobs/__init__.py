"""The server's side of jobs: what a job may be (types), which hosts it is
for (targets), the job store (the one writer of jobs and their runs), the
wake-ups of parked agents, and the hand-off after an install."""
