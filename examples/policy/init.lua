-- An mtakit policy in KumoMTA's format. Run it from the repository root:
--
--   go run ./examples/mtakitd -policy examples/policy/init.lua
--   go run ./examples/mtakitd check examples/policy/init.lua
--
-- Data files named here are found next to this file; the spool and log
-- directories are relative to the working directory.
local kumo = require 'kumo'
local listener_domains = require 'policy-extras.listener_domains'

-- Example key only (examples/policy/dkim/example.com/s1.key, made with
-- "mtakitd dkim-keygen -type ed25519"); publish your own key's TXT record.
local dkim_params = {
  domain = 'example.com',
  selector = 's1',
  headers = { 'From', 'To', 'Subject', 'Date', 'Message-ID' },
  key = 'dkim/example.com/s1.key',
}

kumo.on('init', function()
  kumo.define_spool { name = 'data', path = 'mtakit-data/policy-spool', kind = 'RocksDB' }
  kumo.define_spool { name = 'meta', path = 'mtakit-data/policy-spool', kind = 'RocksDB' }

  kumo.configure_local_logs {
    log_dir = 'mtakit-data/policy-logs',
    max_segment_duration = '1 minute',
    headers = { 'Subject', 'X-Tenant' },
    meta = { 'tenant' },
  }

  kumo.start_esmtp_listener {
    listen = '127.0.0.1:2525',
    hostname = 'localhost',
    relay_hosts = { '127.0.0.1', '::1' },
    max_message_size = '20MiB',
    batch_handling = 'BatchByDomain',
  }
end)

-- Which recipient domains this MTA accepts mail for from anyone, and
-- which receive bounce and feedback reports.
kumo.on('get_listener_domain', listener_domains:setup { 'listener_domains.toml' })

-- Tenants and their queue settings.
local tenants = kumo.toml_load 'tenants.toml'

kumo.on('smtp_server_message_received', function(msg)
  local failed = msg:check_fix_conformance('NON_CANONICAL_LINE_ENDINGS', '')
  if failed then
    kumo.reject(552, string.format('5.6.0 %s', failed))
  end
  local tenant = msg:get_first_named_header_value('X-Tenant') or tenants.default_tenant
  if not tenants.tenant[tenant] then
    kumo.reject(550, string.format("5.7.1 tenant '%s' is not defined", tenant))
  end
  msg:set_meta('tenant', tenant)
  msg:remove_all_named_headers('X-Tenant')
  -- Signing comes last: later changes would break the signature.
  if msg:from_header() and msg:from_header().domain == 'example.com' then
    msg:dkim_sign(kumo.dkim.ed25519_signer(dkim_params))
  end
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  local t = tenants.tenant[tenant or tenants.default_tenant] or {}
  return kumo.make_queue_config {
    retry_interval = t.retry_interval or '20 minutes',
    max_age = t.max_age or '7 days',
  }
end)

kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {
    connection_limit = 10,
    max_message_rate = '100/s',
    enable_tls = 'Opportunistic',
  }
end)
