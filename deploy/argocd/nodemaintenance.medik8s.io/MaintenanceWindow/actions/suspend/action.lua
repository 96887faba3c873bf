-- Start no new nodes (in-flight ones finish). Note: spec.suspend is in Git too, so an
-- automated sync with selfHeal puts Git's value back; commit the change for a lasting pause.
if obj.spec == nil then
  obj.spec = {}
end
obj.spec.suspend = true
return obj
