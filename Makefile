# The two commands: `make run` (the guard on an embedded broker, replaying the demo incident)
# and `make test` (installs what the tests need, starts Apache Kafka, runs every test).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
KAFKA_PORT ?= 39092
STAMP := .crm-guard/.installed

.PHONY: run test install install-test-tools kafka-start kafka-stop demo-data bench clean

$(STAMP): pyproject.toml
	$(PIP) install -q -e '.[test]'
	@mkdir -p .crm-guard && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	crm-guard demo

# System packages the tests use: promtool (Debian's prometheus) and chromium; Kafka's jars via mvn.
install-test-tools: $(STAMP)
	@command -v promtool >/dev/null && command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus chromium >/dev/null)
	@command -v java >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null)
	deploy/kafka/kafka.sh fetch

kafka-start:
	deploy/kafka/kafka.sh start $(KAFKA_PORT)

kafka-stop:
	deploy/kafka/kafka.sh stop $(KAFKA_PORT)

test: install-test-tools
	@deploy/kafka/kafka.sh start $(KAFKA_PORT)
	@status=0; \
	  CRM_GUARD_TEST_BOOTSTRAP=127.0.0.1:$(KAFKA_PORT) CRM_GUARD_TEST_BROKER_KIND=apache \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests || status=$$?; \
	  deploy/kafka/kafka.sh stop $(KAFKA_PORT); exit $$status

demo-data:
	$(PYTHON) scripts/make_demo.py

bench: $(STAMP)
	$(PYTHON) bench/replay_speed.py
	$(PYTHON) bench/detection_quality.py

clean:
	rm -rf .crm-guard build *.egg-info
