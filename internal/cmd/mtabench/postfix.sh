#!/bin/bash
# postfix.sh sets up, starts and stops a throwaway Postfix instance for
# mtabench's baseline. Everything the instance owns lives under DIR: its
# config_directory (DIR/etc), queue_directory (DIR/queue), data_directory
# (DIR/data, which holds master.lock) and its log file (DIR/postfix.log).
# The system's /etc/postfix is read only for the list of files Postfix
# installs (meta_directory) and is never changed; a system Postfix, running
# or not, is not touched (own port, own queue, own lock, own syslog name).
#
#   postfix.sh install                        apt-get install postfix if missing
#   postfix.sh setup DIR PORT RELAY_HOST:PORT [NAME=VALUE ...]
#                                             write DIR/etc/{main,master}.cf; NAME=VALUE
#                                             are extra main.cf settings (e.g. in_flow_delay=0)
#   postfix.sh start DIR                      postfix -c DIR/etc start, wait for PORT
#   postfix.sh stop DIR                       postfix -c DIR/etc stop, wait for the master to exit
#   postfix.sh pid DIR                        print the master's process id
#
# The instance listens on 127.0.0.1:PORT only, accepts mail from 127.0.0.0/8
# for any domain, and relays all of it to RELAY_HOST:PORT (relayhost). There
# is no local delivery (mydestination and the alias maps are empty,
# local_transport is error:), no chroot, no TLS, no DNS (numeric relayhost,
# smtpd_peername_lookup = no). Everything else is Postfix's default, in
# particular the durability: the cleanup daemon fflush()es, fchmod()s and
# fsync()s each queue file before smtpd answers 250 to the end of DATA.
# Must run as root (Postfix's master starts as root and drops to the
# postfix user).
set -euo pipefail

die() { echo "postfix.sh: $*" >&2; exit 1; }

# master_pid DIR prints the instance's master pid (master.lock holds it,
# space-padded), or nothing.
master_pid() { tr -d ' \n' <"$1/data/master.lock" 2>/dev/null || true; }

cmd=${1:-}
case "$cmd" in
install)
	if ! command -v postfix >/dev/null || ! command -v smtp-source >/dev/null; then
		# The Debian package; policy-rc.d keeps the system instance from
		# starting in containers, and we never start it ourselves.
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix
	fi
	;;
setup)
	[ $# -ge 4 ] || die "usage: postfix.sh setup DIR PORT RELAY_HOST:PORT [NAME=VALUE ...]"
	dir=$2 port=$3 relay=$4
	shift 4
	[ "$(id -u)" = 0 ] || die "must run as root"
	case "$relay" in 127.*:*) ;; *) die "relay $relay: loopback only" ;; esac
	dir=$(cd "$dir" && pwd)
	mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
	# Postfix's daemons run as the postfix user and look up paths under
	# these directories; a 0700 temp directory would stop them.
	chmod 755 "$dir" "$dir/etc" "$dir/queue"
	chown postfix "$dir/data"
	relayhost="[${relay%:*}]:${relay##*:}"
	cat >"$dir/etc/main.cf" <<EOF
# Throwaway Postfix instance for mtabench; written by postfix.sh.
compatibility_level = 3.6
config_directory = $dir/etc
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-mtabench
maillog_file = $dir/postfix.log
maillog_file_prefixes = $dir
myhostname = postfix-bench.localhost
mydomain = localhost
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_peername_lookup = no
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled
relayhost = $relayhost
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
append_dot_mydomain = no
EOF
	for kv in "$@"; do
		case "$kv" in *=*) ;; *) die "main.cf setting $kv: want NAME=VALUE" ;; esac
		echo "${kv%%=*} = ${kv#*=}" >>"$dir/etc/main.cf"
	done
	# No chroot (column 5 "n"), only the services a relay needs; the
	# SMTP listener is this instance's own loopback port.
	cat >"$dir/etc/master.cf" <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$port inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
	postfix -c "$dir/etc" check
	;;
start)
	[ $# -eq 2 ] || die "usage: postfix.sh start DIR"
	dir=$2
	postfix -c "$dir/etc" start
	port=$(sed -n 's/^127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$dir/etc/master.cf")
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			exit 0
		fi
		sleep 0.1
	done
	die "postfix did not listen on 127.0.0.1:$port within 10s"
	;;
stop)
	[ $# -eq 2 ] || die "usage: postfix.sh stop DIR"
	dir=$2
	pid=$(master_pid "$dir")
	postfix -c "$dir/etc" stop || true
	if [ -n "$pid" ]; then
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || exit 0
			# An exited master not yet reaped by its parent is a zombie.
			[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" = Z ] && exit 0
			sleep 0.1
		done
		die "postfix master $pid still running after 10s"
	fi
	;;
pid)
	[ $# -eq 2 ] || die "usage: postfix.sh pid DIR"
	pid=$(master_pid "$2")
	[ -n "$pid" ] || die "no master.lock in $2/data"
	echo "$pid"
	;;
*)
	die "usage: postfix.sh install | setup DIR PORT RELAY | start DIR | stop DIR | pid DIR"
	;;
esac
