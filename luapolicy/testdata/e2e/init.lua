-- End-to-end test policy: listener domains and DKIM from the helpers,
-- routing by tenant in Lua. @NAME@ placeholders are filled by the test.
local kumo = require 'kumo'
local listener_domains = require 'policy-extras.listener_domains'
local dkim_sign = require 'policy-extras.dkim_sign'

local dkim_signer = dkim_sign:setup { 'dkim_data.toml' }

kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { '@DNS@' } }
  kumo.define_spool { name = 'data', path = '@SPOOL@', kind = 'RocksDB' }
  kumo.define_spool { name = 'meta', path = '@SPOOL@', kind = 'RocksDB' }
  kumo.configure_local_logs {
    log_dir = '@LOGS@',
    headers = { 'Subject' },
    meta = { 'tenant' },
  }
  kumo.start_esmtp_listener {
    listen = '127.0.0.1:0',
    hostname = 'mx.policy.test',
    relay_hosts = {},
  }
end)

kumo.on('get_listener_domain', listener_domains:setup { 'listener_domains.toml' })

kumo.on('smtp_server_message_received', function(msg)
  local tenant = msg:get_first_named_header_value('X-Tenant') or 'default'
  msg:set_meta('tenant', tenant)
  msg:remove_all_named_headers('X-Tenant')
  dkim_signer(msg)
end)

local pools = { gold = 'pool-gold' }

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {
    egress_pool = pools[tenant] or 'pool-default',
    retry_interval = '1 second',
    max_age = '1 minute',
  }
end)

kumo.on('get_egress_pool', function(name)
  local members = { ['pool-gold'] = 'gold', ['pool-default'] = 'plain' }
  return kumo.make_egress_pool {
    name = name,
    entries = { { name = members[name], weight = 1 } },
  }
end)

kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source {
    name = name,
    source_address = '127.0.0.1',
    ehlo_domain = name .. '.sender.test',
  }
end)

kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {
    smtp_port = @SINKPORT@,
    prohibited_hosts = {},
    connect_timeout = '2s',
    idle_timeout = '200ms',
  }
end)
