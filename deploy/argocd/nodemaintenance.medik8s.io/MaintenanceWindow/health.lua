-- Argo CD health of a nmo MaintenanceWindow (the GitOps contract of nmo's DESIGN.md):
--   spec.suspend                         -> Suspended
--   status.observedGeneration < generation (or no status yet) -> Progressing
--   Stalled=True                          -> Degraded, with the condition's message
--   Ready=True                            -> Healthy, "next window ..., 3/10 nodes done"
--   anything else                         -> Progressing, with the Ready message
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

-- "round 2: 3/10 nodes done, 1 in progress, 1 failed"
local function round_summary(status)
  local round = status.round
  if round == nil or round.total == nil then
    return nil
  end
  local text = (round.completed or 0) .. "/" .. round.total .. " nodes done"
  if round.number ~= nil then
    text = "round " .. round.number .. ": " .. text
  end
  if (round.inProgress or 0) > 0 then
    text = text .. ", " .. round.inProgress .. " in progress"
  end
  if (round.failed or 0) > 0 then
    text = text .. ", " .. round.failed .. " failed"
  end
  return text
end

local function when(status)
  if status.currentWindow ~= nil and status.currentWindow["end"] ~= nil then
    return "window open until " .. status.currentWindow["end"]
  end
  if status.nextWindowLocal ~= nil then
    return "next window " .. status.nextWindowLocal
  end
  if status.nextWindow ~= nil and status.nextWindow.start ~= nil then
    return "next window " .. status.nextWindow.start
  end
  return nil
end

local function join(parts)
  local out = {}
  for _, p in ipairs(parts) do
    if p ~= nil and p ~= "" then
      table.insert(out, p)
    end
  end
  return table.concat(out, ", ")
end

local hs = {}
local status = obj.status

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  local detail = nil
  if status ~= nil then
    detail = round_summary(status)
  end
  hs.message = join({"suspended: no new nodes are started", detail})
  return hs
end

local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "waiting for nmo to observe generation " .. generation
  else
    hs.message = "waiting for nmo to observe the window"
  end
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message or stalled.reason or "Stalled"
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  local message = join({when(status), round_summary(status)})
  if message == "" then
    message = ready.message or "Ready"
  end
  hs.message = message
  return hs
end

hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil then
  hs.message = ready.message
else
  hs.message = "waiting for the Ready condition"
end
return hs
