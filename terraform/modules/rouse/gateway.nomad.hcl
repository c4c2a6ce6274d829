# rouse gateway: the public edge. Routes Host headers to revisions, holds requests while a
# revision wakes from zero, and reports concurrency to the scalers.
#
# One copy serves every runner: the terraform module renders it with nomad_job's
# hcl2 { vars = {...} }, the module's Go test registers it on a real Nomad agent, and
# `nomad job run -var driver=raw_exec ...` works by hand.

variable "job_name" {
  description = "Nomad job ID."
  type        = string
  default     = "rouse-gateway"
}

variable "namespace" {
  description = "Nomad namespace the gateway job runs in."
  type        = string
  default     = "default"
}

variable "region" {
  description = "Nomad region."
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Datacenters to place the gateway in."
  type        = list(string)
  default     = ["*"]
}

variable "mode" {
  description = "\"system\": one gateway on every eligible node; \"service\": `instances` gateways."
  type        = string
  default     = "system"

  validation {
    condition     = contains(["system", "service"], var.mode)
    error_message = "The mode must be \"system\" or \"service\"."
  }
}

variable "instances" {
  description = "Number of gateways when mode = \"service\"."
  type        = number
  default     = 2

  validation {
    condition     = var.instances >= 1
    error_message = "Run at least one gateway."
  }
}

variable "node_class" {
  description = "Only nodes of this node class run a gateway; \"\" = any node."
  type        = string
  default     = ""
}

variable "driver" {
  description = "\"docker\" runs `image`; \"raw_exec\" runs the binary at `rouse_binary` (tests, bare hosts)."
  type        = string
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  description = "Container image holding the rouse binary (driver = \"docker\")."
  type        = string
  default     = ""
}

variable "rouse_binary" {
  description = "Path of the rouse binary on the client (driver = \"raw_exec\")."
  type        = string
  default     = "/usr/local/bin/rouse"
}

variable "public_port" {
  description = "Static host port for public HTTP traffic."
  type        = number
  default     = 80

  validation {
    condition     = var.public_port >= 1 && var.public_port <= 65535
    error_message = "The public port must be between 1 and 65535."
  }
}

variable "domain" {
  description = "Services answer at <service>.<namespace>.<domain>."
  type        = string
}

variable "consul_address" {
  description = "Consul HTTP API as host:port, reached from the node (every client runs an agent)."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "log_level" {
  description = "debug, info, warn or error."
  type        = string
  default     = "info"
}

variable "cpu" {
  description = "CPU reservation in MHz."
  type        = number
  default     = 500
}

variable "memory" {
  description = "Memory reservation in MiB."
  type        = number
  default     = 256
}

locals {
  docker = var.driver == "docker"
  # The process sees the same flags under both drivers: host networking in docker keeps
  # NOMAD_* addresses, the node's Consul agent and the public port identical to raw_exec.
  args = [
    "gateway",
    "--listen", "0.0.0.0:${var.public_port}",
    "--admin-listen", "$${NOMAD_ADDR_admin}",
    "--domain", var.domain,
    "--log-level", var.log_level,
  ]
}

job "rouse-gateway" {
  id          = var.job_name
  name        = var.job_name
  namespace   = var.namespace
  region      = var.region
  datacenters = var.datacenters
  type        = var.mode

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "$${node.class}"
      value     = constraint.value
    }
  }

  update {
    # One node at a time, and only once the new gateway's checks pass: a rolling update
    # never takes the edge down.
    max_parallel     = 1
    min_healthy_time = "5s"
    healthy_deadline = "2m"
  }

  group "gateway" {
    # A system job places one per eligible node and refuses count > 1.
    count = var.mode == "system" ? 1 : var.instances

    network {
      # The public port is static: load balancers target it on every gateway node, and it
      # keeps two gateways off one node. The admin port carries gauges and metrics to
      # the scalers inside the cluster, so any free port will do.
      port "http" {
        static = var.public_port
      }
      port "admin" {}
    }

    # Requests in flight finish before the process is signalled: Nomad deregisters the
    # service, waits, then stops the task.
    shutdown_delay = "5s"

    # The public port, for Consul DNS and load balancers that discover targets in Consul.
    # Not tagged "rouse": that tag marks revision instances, which the gateways watch.
    service {
      name     = "${var.job_name}-http"
      port     = "http"
      provider = "consul"
      tags     = ["public"]

      check {
        name     = "gateway healthy"
        type     = "http"
        port     = "admin"
        path     = "/healthz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 5
      interval = "1m"
      delay    = "2s"
      mode     = "delay"
    }

    task "gateway" {
      driver = var.driver

      # Exactly one config block survives, picked by the driver.
      dynamic "config" {
        for_each = var.driver == "docker" ? [var.image] : []
        content {
          image        = config.value
          network_mode = "host"
          args         = local.args
        }
      }
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [var.rouse_binary] : []
        content {
          command = config.value
          args    = local.args
        }
      }

      env {
        CONSUL_HTTP_ADDR = var.consul_address
      }

      # The Consul token lives in a Nomad Variable the job alone can read (workload
      # identity), never in the jobspec, which anyone with read-job can see.
      template {
        data        = "{{ with nomadVar \"nomad/jobs/${var.job_name}\" }}CONSUL_HTTP_TOKEN={{ .consul_token }}{{ end }}\n"
        destination = "secrets/consul.env"
        env         = true
      }

      # Longer than the gateway's own drain so it can finish held and in-flight requests.
      kill_timeout = "35s"

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
