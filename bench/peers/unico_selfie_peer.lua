-- The OpenResty Lua peer of ngx_unico_selfie_module, for bench/run.sh:
-- GET /selfies/<uuid> answered as a competent OpenResty user would write
-- it.  The location's regex has already checked that unico_process is a
-- UUID.
--
--     lua_package_path  "/path/to/bench/peers/?.lua;;";
--     init_by_lua_block { require "unico_selfie_peer" }
--     location ~ "^/selfies/(?<unico_process>[0-9a-fA-F]{8}-...)$" {
--         content_by_lua_block { require("unico_selfie_peer").serve("/_api") }
--     }
--
-- ngx.location.capture collects the subrequest's body itself (its own
-- body filter, a copy of every buffer): subrequest_output_buffer_size
-- plays no part.

local cjson = require "cjson.safe"

local capture = ngx.location.capture
local decode_base64 = ngx.decode_base64
local json_decode = cjson.decode
local exit = ngx.exit
local var = ngx.var
local header = ngx.header
local get_method = ngx.req.get_method
local type = type

local TYPES = { ["image/jpeg"] = true, ["image/png"] = true }

local _M = {}

function _M.serve(api)
    local method = get_method()
    if method ~= "GET" and method ~= "HEAD" then
        header["Allow"] = "GET, HEAD"
        return exit(405)
    end

    local res = capture(api .. "/client/v1/process/" .. var.unico_process
                        .. "/selfie")

    if res.status ~= 200 or res.truncated then
        return exit(res.status == 404 and 404 or 502)
    end

    local doc = json_decode(res.body)

    if type(doc) ~= "table" or type(doc.fileContents) ~= "string"
       or not TYPES[doc.contentType]
    then
        return exit(502)
    end

    local image = decode_base64(doc.fileContents)

    if not image or #image == 0 then
        return exit(502)
    end

    header["Content-Type"] = doc.contentType
    header["Content-Length"] = #image
    header["X-Content-Type-Options"] = "nosniff"
    header["Cache-Control"] = "private, no-store"

    ngx.print(image)
end

return _M
