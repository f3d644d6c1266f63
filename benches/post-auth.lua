-- wrk script of benches/load.sh's authenticated scenarios: the rig's post.lua (LOAD_RIG_POST:
-- its body, RIG_BODY_FILE, its WRK line) plus the request header LOAD_HEADER ("Name: value"),
-- e.g. the body's precomputed signature or a bearer token. rig.sh always runs the post.lua
-- beside it, so load.sh runs the rig from a directory of links whose post.lua is this file.
dofile(assert(os.getenv("LOAD_RIG_POST"), "LOAD_RIG_POST: the rig's post.lua"))
local header = os.getenv("LOAD_HEADER")
if header and header ~= "" then
  local name, value = header:match("^([^:]+):%s*(.-)%s*$")
  assert(name, "LOAD_HEADER: expected \"Name: value\"")
  wrk.headers[name] = value
end
