#!/usr/bin/env bash
# Apache Kafka 4.x, single node, KRaft mode, from jars that Maven resolves (deploy/kafka/pom.xml).
#   deploy/kafka/kafka.sh fetch          resolve the jars into deploy/kafka/lib (needs Maven Central)
#   deploy/kafka/kafka.sh start [PORT]   format a fresh log dir and start the broker in the background
#   deploy/kafka/kafka.sh stop [PORT]    stop it
# The broker listens on 127.0.0.1:PORT (default 39092) in plaintext, and, for the tests that connect
# the guard the way a managed Kafka (Confluent Cloud, MSK) asks: PORT+2 SASL_PLAINTEXT and PORT+3
# SASL_SSL (mechanisms PLAIN and SCRAM-SHA-512; user crm-guard, password crm-guard-secret), PORT+4
# SSL that requires a client certificate. The TLS files (a throwaway CA, the broker's and a client's
# certificate) are made by deploy/kafka/tls.py in $KAFKA_WORK/tls; without Python's `cryptography`
# the two TLS listeners are left out.
# Its data and log are under $KAFKA_WORK (default /tmp/crm-guard-kafka-PORT, so brokers on
# different ports never share a directory).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-start}
port=${2:-39092}
work=${KAFKA_WORK:-/tmp/crm-guard-kafka-$port}
ctrl=$((port + 1))
sasl=$((port + 2))
sasl_ssl=$((port + 3))
mtls=$((port + 4))
sasl_user=crm-guard
sasl_password=crm-guard-secret

fetch() {
  if [ ! -f "$here/lib/.complete" ]; then
    mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$here/lib"
    touch "$here/lib/.complete"
  fi
}

case "$cmd" in
  fetch) fetch ;;
  start)
    fetch
    if (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; then
      echo "port $port is already in use: stop that broker first (deploy/kafka/kafka.sh stop) or pick another port" >&2
      exit 1
    fi
    rm -rf "$work" && mkdir -p "$work/data"
    listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$ctrl,SASL_PLAINTEXT://127.0.0.1:$sasl"
    advertised="PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl"
    tls=""
    if "${PYTHON:-python3}" "$here/tls.py" "$work/tls" 2>"$work/tls.log"; then
      listeners="$listeners,SASL_SSL://127.0.0.1:$sasl_ssl,SSL://127.0.0.1:$mtls"
      advertised="$advertised,SASL_SSL://127.0.0.1:$sasl_ssl,SSL://127.0.0.1:$mtls"
      tls="ssl.keystore.type=PEM
ssl.keystore.location=$work/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$work/tls/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user=\"$sasl_password\";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    else
      echo "no TLS listeners: deploy/kafka/tls.py failed ($(tail -1 "$work/tls.log"))" >&2
    fi
    cat > "$work/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$ctrl
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
$tls
log.dirs=$work/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
PROPS
    cat > "$work/log4j2.yaml" <<'LOG'
Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
LOG
    cp="$here/lib/*"
    java_opts="-Xms256m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile=$work/log4j2.yaml"
    java $java_opts -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
      -c "$work/server.properties" --add-scram "SCRAM-SHA-512=[name=$sasl_user,password=$sasl_password]" \
      >"$work/format.log" 2>&1
    nohup java $java_opts -cp "$cp" kafka.Kafka "$work/server.properties" >"$work/broker.log" 2>&1 &
    echo $! > "$work/broker.pid"
    for _ in $(seq 1 120); do
      if (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "kafka up on 127.0.0.1:$port, SASL on :$sasl${tls:+, SASL_SSL on :$sasl_ssl, SSL with client certificates on :$mtls} (pid $(cat "$work/broker.pid"))"; exit 0
      fi
      sleep 0.5
    done
    echo "kafka did not start; log: $work/broker.log" >&2; tail -30 "$work/broker.log" >&2; exit 1
    ;;
  stop)
    if [ -f "$work/broker.pid" ]; then kill "$(cat "$work/broker.pid")" 2>/dev/null || true; rm -f "$work/broker.pid"; fi
    ;;
  *) echo "usage: $0 fetch|start [PORT]|stop" >&2; exit 2 ;;
esac
