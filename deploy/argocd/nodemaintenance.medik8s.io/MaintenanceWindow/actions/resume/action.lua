-- Start nodes again at the next open window.
if obj.spec ~= nil and obj.spec.suspend ~= nil then
  obj.spec.suspend = false
end
return obj
