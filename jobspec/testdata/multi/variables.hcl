# A spec split over files: ParseFiles reads every *.hcl of a directory.
variable "target" {
  default = "multi"
}
