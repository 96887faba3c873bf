-- Argo CD health of a NodeMaintenance (nmo, wire-compatible with medik8s):
--   status.observedGeneration < generation (or no status yet) -> Progressing
--   Stalled=True or phase Failed          -> Degraded, with the reason (lastError)
--   Ready=True or phase Succeeded         -> Healthy: the node is cordoned and drained
--   phase Running                         -> Progressing, with the drain progress
-- Lua 5.1, as Argo CD runs it (tests/deploy_argocd.rs runs it on captured objects).

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local hs = {}
local status = obj.status
local node = "?"
if obj.spec ~= nil and obj.spec.nodeName ~= nil then
  node = obj.spec.nodeName
end

local generation = obj.metadata.generation
-- medik8s never sets observedGeneration: accept a phase without it.
if status == nil or (status.phase == nil and status.observedGeneration == nil)
    or (status.observedGeneration ~= nil and generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to start the maintenance of node " .. node
  return hs
end

local stalled = condition(status, "Stalled")
if (stalled ~= nil and stalled.status == "True") or status.phase == "Failed" then
  hs.status = "Degraded"
  if status.lastError ~= nil and status.lastError ~= "" then
    hs.message = status.lastError
  elseif stalled ~= nil and stalled.message ~= nil then
    hs.message = stalled.message
  else
    hs.message = "maintenance of node " .. node .. " failed"
  end
  return hs
end

local ready = condition(status, "Ready")
if (ready ~= nil and ready.status == "True") or (ready == nil and status.phase == "Succeeded") then
  hs.status = "Healthy"
  hs.message = "node " .. node .. " is in maintenance: cordoned and drained"
  return hs
end

hs.status = "Progressing"
local message = "draining node " .. node .. ": " .. (status.drainProgress or 0) .. "%"
if status.pendingPods ~= nil and #status.pendingPods > 0 then
  local shown = {}
  for i, pod in ipairs(status.pendingPods) do
    if i > 3 then
      table.insert(shown, "and " .. (#status.pendingPods - 3) .. " more")
      break
    end
    table.insert(shown, pod)
  end
  message = message .. ", waiting for " .. table.concat(shown, ", ")
end
if status.lastError ~= nil and status.lastError ~= "" then
  message = message .. " (" .. status.lastError .. ")"
end
hs.message = message
return hs
