hs = {}
if obj.status == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "waiting for sofort to observe the new spec"
  return hs
end
local ready, stalled = nil, nil
for _, c in ipairs(obj.status.conditions or {}) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" then stalled = c end
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = obj.status.message
elseif obj.spec.paused then
  hs.status = "Suspended"
  hs.message = obj.status.message
else
  hs.status = "Progressing"
  hs.message = obj.status.message
end
return hs
