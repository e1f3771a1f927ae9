-- An mtakit policy in KumoMTA's format, built like KumoMTA's example
-- policy from the policy-extras helpers and their TOML files. Run it from
-- the repository root:
--
--   go run ./examples/mtakitd check examples/policy/init.lua
--   go run ./examples/mtakitd -policy examples/policy/init.lua
--
-- Data files named here are found next to this file; the spool and log
-- directories are relative to the working directory.
local kumo = require 'kumo'
local shaping = require 'policy-extras.shaping'
local queue_module = require 'policy-extras.queue'
local listener_domains = require 'policy-extras.listener_domains'
local sources = require 'policy-extras.sources'

-- Egress sources and pools (sources.toml).
sources:setup { 'sources.toml' }

-- Traffic shaping: KumoMTA's community shaping.toml (built into mtakit)
-- and then this policy's shaping.toml. Its mx_rollup blocks resolve MX
-- records when the policy loads.
local shaper = shaping:setup_with_automation {
  no_default_files = false,
  extra_files = { 'shaping.toml' },
}

-- Tenants and queue settings (queues.toml): the X-Tenant header picks the
-- tenant and is removed.
local queue_helper = queue_module:setup { 'queues.toml' }

-- Example key only (dkim/example.com/s1.key, made with
-- "mtakitd dkim-keygen -type ed25519"); publish your own key's TXT record.
-- policy-extras.dkim_sign with a dkim_data.toml does the same per domain.
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
    headers = { 'Subject' },
    meta = { 'tenant' },
  }

  kumo.start_esmtp_listener {
    listen = '127.0.0.1:2525',
    hostname = 'localhost',
    relay_hosts = { '127.0.0.1', '::1' },
    max_message_size = '20MiB',
    batch_handling = 'BatchByDomain',
  }

  -- KumoMTA's HTTP API (inject, admin) for this host only.
  kumo.start_http_listener {
    listen = '127.0.0.1:8000',
    trusted_hosts = { '127.0.0.1', '::1' },
  }
end)

-- Which recipient domains this MTA accepts mail for from anyone, and
-- which receive bounce and feedback reports.
kumo.on('get_listener_domain', listener_domains:setup { 'listener_domains.toml' })

kumo.on('get_egress_path_config', shaper.get_egress_path_config)

kumo.on('smtp_server_message_received', function(msg)
  local failed = msg:check_fix_conformance('NON_CANONICAL_LINE_ENDINGS', '')
  if failed then
    kumo.reject(552, string.format('5.6.0 %s', failed))
  end
  queue_helper:apply(msg)
  -- Signing comes last: later changes would break the signature.
  local from = msg:from_header()
  if from and from.domain == 'example.com' then
    msg:dkim_sign(kumo.dkim.ed25519_signer(dkim_params))
  end
end)
