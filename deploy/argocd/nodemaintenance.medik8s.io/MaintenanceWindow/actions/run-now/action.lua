-- Open one extra window of spec.duration now: nmo handles each new value of the annotation
-- nodemaintenance.medik8s.io/run-now once and echoes it in status.lastHandledRunNow. The
-- current time is a value that is new on every click. Only metadata changes, so Git's
-- manifest and the live object do not drift apart.
local os = require("os")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["nodemaintenance.medik8s.io/run-now"] = os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
