-- Argo CD resource actions of a MaintenanceWindow: suspend or resume (one of the two, by
-- spec.suspend) and run-now (disabled while suspended: a suspended window starts no node).
local actions = {}
local suspended = obj.spec ~= nil and obj.spec.suspend == true
if suspended then
  actions["resume"] = {["iconClass"] = "fa fa-fw fa-play", ["displayName"] = "Resume"}
else
  actions["suspend"] = {["iconClass"] = "fa fa-fw fa-pause", ["displayName"] = "Suspend"}
end
actions["run-now"] = {
  ["iconClass"] = "fa fa-fw fa-forward",
  ["displayName"] = "Run now",
  ["disabled"] = suspended,
}
return actions
