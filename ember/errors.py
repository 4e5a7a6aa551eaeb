"""The one exception family Ember raises for bad input: a one-line message naming file, node and op."""

from __future__ import annotations


class EmberError(Exception):
    """A user-facing error: one line naming where (file, node, op), what went wrong and the fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        node: str | None = None,
        op: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.node = node
        self.op = op
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.node is not None or self.op:
            label = f"node '{self.node}'" if self.node is not None else "node"
            where.append(f"{label} ({self.op})" if self.op else label)
        text = ": ".join(where + [self.message]) if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split("\n"))

    def with_file(self, file: str) -> EmberError:
        """Return this error with `file` filled in when it was not known where it was raised."""
        if self.file is None:
            self.file = str(file)
            self.args = (str(self),)
        return self
