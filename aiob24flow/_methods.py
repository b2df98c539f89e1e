"""The REST method names, spelled as the portal finds them (capital ``Flow``)."""

ACTIVATE = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"
GET = "tasks.flow.Flow.get"
