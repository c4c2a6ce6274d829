# examples/traffic-split — one service, two revisions: blue (the first apply) and green
# (apply again with -var color=green). Traffic stays on blue until you move it:
#   rouse traffic split split-blue=50 split-green=50
variable "bin" {
  description = "Absolute path of the folder holding the built hello binary."
  type        = string
}

variable "color" {
  description = "blue or green: becomes the revision name and what the app answers."
  type        = string
  default     = "blue"
}

service "split" {
  namespace     = "default"
  revision_name = "split-${var.color}"
  driver        = "raw_exec"
  command       = "${var.bin}/hello"
  env           = { TARGET = var.color }

  readiness { path = "/healthz" }

  autoscaling {
    min = 1
    max = 4
  }

  traffic {
    revision = "split-blue"
    percent  = 100
    tag      = "blue"
  }
}
