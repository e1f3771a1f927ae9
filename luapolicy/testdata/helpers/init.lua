-- End-to-end test policy built like KumoMTA's example policy: all
-- routing comes from the policy-extras helpers and their TOML files.
-- @NAME@ placeholders are filled by the test.
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
local queue_module = require 'policy-extras.queue'
local listener_domains = require 'policy-extras.listener_domains'
local sources = require 'policy-extras.sources'
local dkim_sign = require 'policy-extras.dkim_sign'

sources:setup { 'sources.toml' }
local dkim_signer = dkim_sign:setup { 'dkim_data.toml' }
local shaper = shaping:setup_with_automation {
  extra_files = { 'shaping.toml' },
}
local queue_helper = queue_module:setup { 'queues.toml' }

kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { '@DNS@' } }
  kumo.define_spool { name = 'data', path = '@SPOOL@', kind = 'RocksDB' }
  kumo.define_spool { name = 'meta', path = '@SPOOL@', kind = 'RocksDB' }
  shaper.setup_publish()
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
kumo.on('get_egress_path_config', shaper.get_egress_path_config)

kumo.on('smtp_server_message_received', function(msg)
  queue_helper:apply(msg)
  dkim_signer(msg)
end)
