#!/usr/bin/env bash
# A real SLURM (Debian 12's 22.05) with accounting on this machine, for tests/test_real_slurm.py:
#   bash .ci/slurm_up.sh
# Installs munge, slurmctld, slurmd, slurmdbd and MariaDB, writes the configuration from this
# machine (hostname, CPUs, memory) and starts every daemon by hand: CI machines have no systemd.
# Partition cpu (the default) is this machine as one node. Debian builds SLURM with
# MULTIPLE_SLURMD, so a second slurmd on another port makes partition pair: two nodes on one
# host, for a real two-node training job. Accounting is on, so the executor plugin's default
# status check (sacct) and its account check run for real; the account is ci_account.
# Idempotent: a cluster that already answers is left as is.
set -euo pipefail
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
if [ "$(timeout 5 sinfo -h -N -p pair -o %T 2>/dev/null | grep -c idle)" = 2 ]; then exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v mariadbd >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
fi

node=$(hostname -s)
second=${node}b
cpus=$(nproc)
# More memory than slurmd measures drains the node: leave about 1 GiB to the system.
memory=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
conf=/etc/slurm
$sudo mkdir -p $conf /var/spool/slurmctld /var/spool/slurmd/$node /var/spool/slurmd/$second /var/log/slurm \
  /run/munge /run/mysqld
$sudo chown munge:munge /run/munge && $sudo chown mysql:mysql /run/mysqld

$sudo tee $conf/slurm.conf >/dev/null <<EOF
ClusterName=ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# squeue must still see a finished job when the plugin asks (it needs 3 x its first check's delay).
MinJobAge=3600
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
NodeName=$node NodeHostname=$node NodeAddr=127.0.0.1 Port=17001 CPUs=$cpus RealMemory=$memory State=UNKNOWN
NodeName=$second NodeHostname=$node NodeAddr=127.0.0.1 Port=17002 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=pair Nodes=$node,$second MaxTime=INFINITE State=UP
EOF
$sudo tee $conf/slurmdbd.conf >/dev/null <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
$sudo chmod 600 $conf/slurmdbd.conf

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm_up: $what did not come up in ${seconds}s" >&2
  tail -5 /var/log/slurm/*.log >&2 || true
  exit 1
}

pgrep -x munged >/dev/null || $sudo runuser -u munge -- /usr/sbin/munged
wait_for 10 munged munge -n
pgrep -x mariadbd >/dev/null || ($sudo runuser -u mysql -- /usr/sbin/mariadbd >/var/log/slurm/mariadb.log 2>&1 &)
wait_for 30 MariaDB $sudo mariadb -e "select 1"
pgrep -x slurmdbd >/dev/null || $sudo slurmdbd
wait_for 30 slurmdbd timeout 5 sacctmgr -n list cluster
$sudo sacctmgr -i add cluster ci >/dev/null || true
$sudo sacctmgr -i add account ci_account Description=CI Organization=ci >/dev/null || true
$sudo sacctmgr -i add user "$(id -un)" Account=ci_account DefaultAccount=ci_account >/dev/null || true
pgrep -x slurmctld >/dev/null || $sudo slurmctld
pgrep -f "slurmd -N $node\$" >/dev/null || $sudo slurmd -N "$node"
pgrep -f "slurmd -N $second\$" >/dev/null || $sudo slurmd -N "$second"
wait_for 30 "two idle nodes" bash -c '[ "$(sinfo -h -N -p pair -o %T | grep -c idle)" = 2 ]'
echo "slurm_up: nodes $node and $second ($cpus CPUs, $memory MB each; partitions cpu: $node, pair: both)," \
  "accounting on (account ci_account)"
