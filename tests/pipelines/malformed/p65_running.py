"""A scientist's stateful worker that forgot to declare it (for snapshot-not-stateful.yaml)."""

import beampipe


class RunningMean(beampipe.Worker):
    """The mean of mu(E) so far, kept across a restart; but ``stateful = True`` is missing."""

    def __init__(self, params, name=""):
        super().__init__(params, name)
        self.total, self.count = 0.0, 0

    def process(self, msg):
        self.total += float(msg.data["mu"])
        self.count += 1
        return beampipe.Message(data={"mean": self.total / self.count})

    def snapshot(self):
        return self.total, self.count

    def restore(self, state):
        self.total, self.count = state
