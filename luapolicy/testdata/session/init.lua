-- SMTP session events, written as a KumoMTA policy would use them: the
-- connection, EHLO, AUTH PLAIN, MAIL FROM and RCPT TO phases, with
-- conn_meta carrying state into the message meta, and relay_from_authz
-- letting authenticated clients relay. @NAME@ placeholders are filled by
-- the test.
local kumo = require 'kumo'
local listener_domains = require 'policy-extras.listener_domains'

kumo.on('init', function()
  kumo.dns.configure_resolver { name_servers = { '@DNS@' } }
  kumo.define_spool { name = 'data', path = '@SPOOL@', kind = 'RocksDB' }
  kumo.define_spool { name = 'meta', path = '@SPOOL@', kind = 'RocksDB' }
  kumo.configure_local_logs {
    log_dir = '@LOGS@',
    meta = { 'x_peer', 'x_helo', 'x_sender', 'x_seen', 'authn_id', 'authz_id' },
  }
  kumo.start_esmtp_listener {
    listen = '127.0.0.1:0',
    hostname = 'mx.session.test',
    relay_hosts = {},
  }
  -- A second listener whose connections are all refused at connect time.
  kumo.start_esmtp_listener {
    listen = '127.0.0.1:0',
    hostname = 'closed.session.test',
    relay_hosts = {},
    meta = { x_closed = true },
  }
end)

kumo.on('get_listener_domain', listener_domains:setup { 'listener_domains.toml' })

kumo.on('smtp_server_connection_accepted', function(conn_meta)
  if conn_meta:get_meta 'x_closed' then
    kumo.reject(421, '4.3.2 not accepting mail here')
  end
  conn_meta:set_meta('x_peer', conn_meta:get_meta 'received_from')
end)

kumo.on('smtp_server_ehlo', function(domain, conn_meta, extensions)
  if domain == 'bad.actor' then
    kumo.reject(550, '5.7.1 go away')
  end
  if domain == 'broken.test' then
    error 'the EHLO check failed'
  end
  conn_meta:set_meta('x_helo', domain)
  table.insert(extensions, 'X-SESSION-TEST')
  return extensions
end)

local passwords = { scott = 'tiger', relay = 'secret' }

kumo.on('smtp_server_auth_plain', function(authz, authc, password, conn_meta)
  if password == '' then
    return false
  end
  return passwords[authc] == password
end)

kumo.on('smtp_server_mail_from', function(sender, conn_meta)
  if sender.domain == 'spammer.test' then
    kumo.reject(550, '5.7.1 mail from ' .. sender.domain .. ' is not accepted')
  end
  if sender.user == 'crash' then
    local t = nil
    return t.field -- a bug in the policy
  end
  conn_meta:set_meta('x_sender', tostring(sender))
end)

kumo.on('smtp_server_mail_rcpt_to', function(recipient, conn_meta)
  if recipient.user == 'nobody' then
    kumo.reject(550, '5.1.1 no such user')
  end
end)

kumo.on('smtp_server_message_received', function(msg, conn_meta)
  -- Connection meta was copied into the message meta.
  msg:set_meta('x_seen', msg:get_meta 'x_helo' .. '|' .. (msg:get_meta 'authz_id' or 'anonymous'))
end)

kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {
    smtp_port = @SINKPORT@,
    prohibited_hosts = {},
    connect_timeout = '2s',
    idle_timeout = '200ms',
  }
end)
