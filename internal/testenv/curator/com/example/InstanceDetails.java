package com.example;

/**
 * A custom Curator payload class, as in Curator's own discovery example: what a
 * Java service that wrote its own payload class registers and reads.
 */
public class InstanceDetails {
    private String description;

    public InstanceDetails() {
    }

    public InstanceDetails(String description) {
        this.description = description;
    }

    public String getDescription() {
        return description;
    }

    public void setDescription(String description) {
        this.description = description;
    }
}
